"""Train a small GPT for a few steps on a (2, 4) mesh spanning 2 processes x 4 CPU devices.

    shardsearch launch -n 2 --local-devices 4 -- python -m examples.multihost_gpt
    python -m examples.multihost_gpt            # the same on one process with 8 CPU devices

Run from the repository root (the GPT is the benchmark one, from benchmarks/models).
The script is ordinary single-program code: after ``initialize_from_env()`` the mesh
spans every process's devices and ``shardsearch.auto`` is used unchanged. Every process
builds the same parameters from the same seed and passes them as host arrays (each
process places only its own shards); the batch is per process: each process holds only
its rows and makes one global array of them with ``jax.make_array_from_process_local_data``.
Each process prints the plan fingerprint and the losses, which agree across processes
and with the single-process run.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from shardsearch.runtime.distributed import initialize_from_env

CONFIG_ARGS = dict(name="gpt-mini", hidden=64, layers=1, heads=4, seq=32, vocab=128, batch=8)
CLUSTER = "2x4-slow"  # two nodes of four devices: the shape of this run
MESH_SHAPE = (2, 4)


def make_problem():
    """(train_step, params, opt_state, batch): the step and full host (numpy) arrays."""
    from benchmarks.models import gpt
    from benchmarks.models._common import make_train_step

    cfg = gpt.GPTConfig(**CONFIG_ARGS)
    optimizer = optax.adamw(1e-3)
    params = gpt.init_params(cfg, jax.random.PRNGKey(0))
    opt_state = optimizer.init(params)
    batch = gpt.make_batch(cfg, jax.random.PRNGKey(1))
    host = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
    return make_train_step(gpt.loss_fn(cfg), optimizer), host(params), host(opt_state), host(batch)


def process_batch(batch, mesh):
    """One global batch array per leaf, from this process's rows only.

    With ``jax.make_mesh`` the first ("data") axis runs over processes, so process i
    holds rows i*B/n .. (i+1)*B/n; a real loader would read just those rows.
    """
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    n, i = jax.process_count(), jax.process_index()

    def local(x):
        rows = x.shape[0] // n
        return jax.make_array_from_process_local_data(sharding, x[i * rows : (i + 1) * rows])

    return jax.tree_util.tree_map(local, batch)


def train(step, params, opt_state, batch, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))  # the loss is replicated: every process can read it
    return losses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    if initialize_from_env() is None:  # not launched: one process with 8 CPU devices
        jax.config.update("jax_num_cpu_devices", 8)

    import shardsearch as ss

    train_step, params, opt_state, batch = make_problem()
    mesh = jax.make_mesh(MESH_SHAPE, ("data", "model"))
    step = ss.auto(train_step, mesh=mesh, cluster=CLUSTER)
    global_batch = process_batch(batch, step.mesh)
    plan = step.plan_for(params, opt_state, global_batch)
    who = f"process {jax.process_index()}/{jax.process_count()}"
    print(f"{who}: {jax.local_device_count()} local devices of {jax.device_count()}", flush=True)
    print(f"{who}: plan {plan.fingerprint()}", flush=True)
    losses = train(step, params, opt_state, global_batch, args.steps)
    print(f"{who}: losses {' '.join(repr(x) for x in losses)}", flush=True)


if __name__ == "__main__":
    main()
