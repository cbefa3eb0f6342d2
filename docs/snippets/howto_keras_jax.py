"""A Keras 3 model on the JAX backend: its stateless_call makes the step a pure function of
the model's variables, which shardsearch plans like any other arrays."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # 8 fake devices
os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import shardsearch as ss  # noqa: E402

model = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dense(64)])
trainable = [v.value for v in model.trainable_variables]
non_trainable = [v.value for v in model.non_trainable_variables]
optimizer = optax.sgd(0.05, momentum=0.9)


def train_step(trainable, non_trainable, opt_state, x, y):
    def loss_fn(tv):
        out, new_non_trainable = model.stateless_call(tv, non_trainable, x, training=True)
        return jnp.mean((out - y) ** 2), new_non_trainable

    (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), non_trainable, opt_state, loss


x = jax.random.normal(jax.random.PRNGKey(1), (256, 64))
y = jnp.sin(x)
opt_state = optimizer.init(trainable)

step = ss.auto(train_step, mesh=(2, 4))
print(step.plan_for(trainable, non_trainable, opt_state, x, y).summary().splitlines()[2])
new_trainable, _, _, loss = step(trainable, non_trainable, opt_state, x, y)
want = jax.jit(train_step)(trainable, non_trainable, opt_state, x, y)
for got, ref in zip(new_trainable, want[0]):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
for variable, value in zip(model.trainable_variables, new_trainable):  # back into the Keras model
    variable.assign(value)
print(f"loss {float(loss):.4f}, matches jax.jit")
