"""A ViT in Flax nnx: strided-conv patch embedding, class token, pre-LN encoder, head
on the class token. The train step splits the nnx module into graph + state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from models.common import ModelCase, grad_step

BATCH, SIZE, PATCH, WIDTH, HEADS, LAYERS, CLASSES = 8, 16, 4, 32, 4, 2, 8


class EncoderBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(HEADS, WIDTH, decode=False, use_bias=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.fc1 = nnx.Linear(WIDTH, 4 * WIDTH, rngs=rngs)
        self.fc2 = nnx.Linear(4 * WIDTH, WIDTH, rngs=rngs)

    def __call__(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h)
        return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))


class ViT(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        tokens = (SIZE // PATCH) ** 2 + 1
        self.patches = nnx.Conv(3, WIDTH, (PATCH, PATCH), strides=PATCH, padding="VALID", rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, WIDTH)))
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, tokens, WIDTH)))
        self.blocks = nnx.List([EncoderBlock(rngs) for _ in range(LAYERS)])
        self.ln = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.head = nnx.Linear(WIDTH, CLASSES, rngs=rngs)

    def __call__(self, images):
        x = self.patches(images)
        x = x.reshape(x.shape[0], -1, WIDTH)
        cls = jnp.broadcast_to(self.cls[...], (x.shape[0], 1, WIDTH))
        x = jnp.concatenate([cls, x], axis=1) + self.pos[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x[:, 0]))


def make(seed: int = 0) -> ModelCase:
    kx, ky = jax.random.split(jax.random.PRNGKey(seed + 1))
    graphdef, params = nnx.split(ViT(nnx.Rngs(seed)), nnx.Param)
    optimizer = optax.adamw(1e-3)
    batch = {"images": jax.random.normal(kx, (BATCH, SIZE, SIZE, 3)),
             "labels": jax.random.randint(ky, (BATCH,), 0, CLASSES)}

    def loss_fn(params, batch):
        logits = nnx.merge(graphdef, params)(batch["images"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    train_step = grad_step(loss_fn, optimizer)
    return ModelCase("vit", train_step, (params, optimizer.init(params), batch))
