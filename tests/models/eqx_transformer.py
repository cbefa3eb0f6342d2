"""An Equinox transformer classifier: embedding, attention block, mean pooling.

Equinox models act on one example; the batch is a ``jax.vmap``. The trained leaves
are split from the static rest with ``eqx.partition`` so the step takes plain arrays.
"""

from __future__ import annotations

import equinox as eqx
import jax
import optax

from models.common import ModelCase, grad_step

VOCAB, SEQ, WIDTH, HEADS, BATCH, CLASSES = 64, 16, 32, 4, 8, 8


class Block(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.ln1 = eqx.nn.LayerNorm(WIDTH)
        self.attn = eqx.nn.MultiheadAttention(HEADS, WIDTH, key=k1)
        self.ln2 = eqx.nn.LayerNorm(WIDTH)
        self.mlp = eqx.nn.MLP(WIDTH, WIDTH, 4 * WIDTH, 1, activation=jax.nn.gelu, key=k2)

    def __call__(self, x):  # x: [seq, width]
        h = jax.vmap(self.ln1)(x)
        x = x + self.attn(h, h, h)
        return x + jax.vmap(self.mlp)(jax.vmap(self.ln2)(x))


class Classifier(eqx.Module):
    embed: eqx.nn.Embedding
    pos: jax.Array
    blocks: list
    head: eqx.nn.Linear

    def __init__(self, key):
        ke, kp, kb, kh = jax.random.split(key, 4)
        self.embed = eqx.nn.Embedding(VOCAB, WIDTH, key=ke)
        self.pos = 0.02 * jax.random.normal(kp, (SEQ, WIDTH))
        self.blocks = [Block(k) for k in jax.random.split(kb, 2)]
        self.head = eqx.nn.Linear(WIDTH, CLASSES, key=kh)

    def __call__(self, tokens):  # tokens: [seq]
        x = jax.vmap(self.embed)(tokens) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(0))


def make(seed: int = 0) -> ModelCase:
    kp, kt, kl = jax.random.split(jax.random.PRNGKey(seed), 3)
    params, static = eqx.partition(Classifier(kp), eqx.is_array)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    batch = {"tokens": jax.random.randint(kt, (BATCH, SEQ), 0, VOCAB),
             "labels": jax.random.randint(kl, (BATCH,), 0, CLASSES)}

    def loss_fn(params, batch):
        model = eqx.combine(params, static)
        logits = jax.vmap(model)(batch["tokens"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    train_step = grad_step(loss_fn, optimizer)
    return ModelCase("equinox", train_step, (params, optimizer.init(params), batch))
