"""GPT-style decoder in Flax linen: pre-LN, causal attention, tied embeddings.

``scan=True`` stacks the layers with ``nn.scan`` (parameters get a leading layers dim).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from models.common import ModelCase, grad_step, token_batch

VOCAB, SEQ, WIDTH, HEADS, LAYERS, BATCH = 64, 16, 32, 4, 2, 8


class Block(nn.Module):
    width: int
    heads: int
    dtype: jnp.dtype = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x, _=None):
        h = nn.LayerNorm(dtype=self.dtype)(x)
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
        h = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, use_bias=False)(h, h, mask=mask)
        x = x + h
        h = nn.LayerNorm(dtype=self.dtype)(x)
        h = nn.Dense(4 * self.width, dtype=self.dtype)(h)
        h = nn.Dense(self.width, dtype=self.dtype)(nn.gelu(h))
        return x + h, None


class GPT(nn.Module):
    vocab: int = VOCAB
    seq: int = SEQ
    width: int = WIDTH
    heads: int = HEADS
    layers: int = LAYERS
    scan: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(self.vocab, self.width, embedding_init=nn.initializers.normal(0.02))
        pos = self.param("pos", nn.initializers.normal(0.02), (self.seq, self.width))
        x = embed(tokens) + pos[None, : tokens.shape[1]]
        x = x.astype(self.dtype)
        if self.scan:
            stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.layers)
            x, _ = stack(self.width, self.heads, self.dtype)(x, None)
        else:
            for _ in range(self.layers):
                x, _ = Block(self.width, self.heads, self.dtype)(x)
        x = nn.LayerNorm(dtype=self.dtype)(x)
        return embed.attend(x.astype(jnp.float32))  # tied: logits against the embedding table


def make(scan: bool = False, dtype=jnp.float32, seed: int = 0, abstract: bool = False, batch: int = BATCH,
         optimizer=None, **sizes) -> ModelCase:
    """``sizes``: GPT fields (vocab, seq, width, heads, layers); ``abstract``: arguments as
    ShapeDtypeStructs (nothing allocated), for planning and compiling large configs;
    ``optimizer``: an optax optimizer (default AdamW)."""
    model = GPT(scan=scan, dtype=dtype, **sizes)
    optimizer = optimizer or optax.adamw(1e-3)
    kp, kb = jax.random.split(jax.random.PRNGKey(seed))
    data = token_batch(kb, batch, model.seq, model.vocab)
    init = lambda k: model.init(k, data["tokens"])["params"]  # noqa: E731
    params = jax.eval_shape(init, kp) if abstract else init(kp)

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["tokens"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    name = "gpt_scan" if scan else "gpt"
    if dtype != jnp.float32:
        name += "_" + jnp.dtype(dtype).name
    opt_state = jax.eval_shape(optimizer.init, params) if abstract else optimizer.init(params)
    if abstract:
        data = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), data)
    return ModelCase(name, grad_step(loss_fn, optimizer), (params, opt_state, data))
