"""A small ResNet in Flax linen: conv + batch norm + relu, max pooling, strided
residual stages, global average pooling. Batch statistics travel with the params."""

from __future__ import annotations

import flax.linen as nn
import jax
import optax

from models.common import ModelCase

BATCH, SIZE, CLASSES, WIDTHS = 8, 16, 8, (8, 16)


class ResidualBlock(nn.Module):
    width: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
        h = nn.relu(norm()(nn.Conv(self.width, (3, 3), self.stride, use_bias=False)(x)))
        h = norm()(nn.Conv(self.width, (3, 3), use_bias=False)(h))
        if x.shape != h.shape:
            x = norm()(nn.Conv(self.width, (1, 1), self.stride, use_bias=False)(x))
        return nn.relu(x + h)


class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(WIDTHS[0], (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        for i, w in enumerate(WIDTHS):
            x = ResidualBlock(w, 1 if i == 0 else 2)(x, train)
        return nn.Dense(CLASSES)(x.mean(axis=(1, 2)))


def make(seed: int = 0) -> ModelCase:
    model = ResNet()
    optimizer = optax.sgd(0.05, momentum=0.9)
    kp, kx, ky = jax.random.split(jax.random.PRNGKey(seed), 3)
    batch = {"images": jax.random.normal(kx, (BATCH, SIZE, SIZE, 3)),
             "labels": jax.random.randint(ky, (BATCH,), 0, CLASSES)}
    variables = model.init(kp, batch["images"], train=False)
    state = {"params": variables["params"], "batch_stats": variables["batch_stats"]}

    def loss_fn(params, stats, batch):
        logits, new = model.apply({"params": params, "batch_stats": stats}, batch["images"],
                                  mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
        return loss, new["batch_stats"]

    def train_step(state, opt_state, batch):
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], state["batch_stats"], batch)
        updates, opt_state = optimizer.update(grads, opt_state, state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "batch_stats": stats}, opt_state, loss

    return ModelCase("resnet", train_step, (state, optimizer.init(state["params"]), batch))
