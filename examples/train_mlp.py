"""Train a 6-layer MLP with Adam on a (2, 4) mesh of 8 fake CPU devices.

    python examples/train_mlp.py [--steps 5] [--batch 512] [--hidden 1024] [--cluster h100-8]

shardsearch picks the sharding of every parameter, optimizer state and activation;
the script prints the plan and the loss going down.
"""

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import shardsearch as ss  # noqa: E402


def init_mlp(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * (2.0 / m) ** 0.5, "b": jnp.zeros((n,))}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp(params, x):
    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def make_train_step(optimizer):
    def train_step(params, opt_state, batch):
        x, y = batch
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((mlp(p, x) - y) ** 2))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def planning_target(batch=4096, hidden=2048):
    """For `shardsearch plan examples/train_mlp.py:planning_target`: the step and abstract args."""
    optimizer = optax.adam(1e-3)
    params = jax.eval_shape(lambda: init_mlp(jax.random.PRNGKey(0), [hidden] * 7))
    opt_state = jax.eval_shape(optimizer.init, params)
    batch_sds = (jax.ShapeDtypeStruct((batch, hidden), jnp.float32),) * 2
    return make_train_step(optimizer), (params, opt_state, batch_sds)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--cluster", default="h100-8")
    args = ap.parse_args()

    sizes = [args.hidden] * 7  # 6 Dense layers
    params = init_mlp(jax.random.PRNGKey(0), sizes)
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    kx, kw = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(kx, (args.batch, args.hidden))
    y = jnp.tanh(x @ jax.random.normal(kw, (args.hidden, args.hidden)) / args.hidden**0.5)

    mesh = jax.make_mesh((2, 4), ("data", "model"))
    step = ss.auto(make_train_step(optimizer), mesh=mesh, cluster=args.cluster, donate_argnums=(0, 1))

    t0 = time.perf_counter()
    plan = step.plan_for(params, opt_state, (x, y))
    print(plan.summary())
    print(f"\nplan time {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    step.lower(params, opt_state, (x, y)).compile()
    print(f"XLA compile time {time.perf_counter() - t0:.2f} s\n")

    for i in range(args.steps):
        params, opt_state, loss = step(params, opt_state, (x, y))
        print(f"step {i}  loss {float(loss):.5f}")


if __name__ == "__main__":
    main()
