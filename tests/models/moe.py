"""A transformer block with a top-2 mixture-of-experts FFN in Flax linen.

Routing: ``lax.top_k`` picks two experts per token, ``one_hot`` + ``cumsum`` give each
token its slot in the expert's buffer (tokens past the capacity are dropped), and
einsums move tokens into the buffers [experts, groups, capacity, width] and back.
Experts (8) outnumber the model axis (4), so the expert dim can be split.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from models.common import ModelCase, grad_step, token_batch

VOCAB, SEQ, WIDTH, HEADS, EXPERTS, BATCH, CAPACITY = 64, 16, 32, 4, 8, 8, 8


class MoE(nn.Module):
    @nn.compact
    def __call__(self, x):
        probs = jax.nn.softmax(nn.Dense(EXPERTS, use_bias=False, name="router")(x), axis=-1)  # [b,s,x]
        gates, experts = jax.lax.top_k(probs, 2)  # [b,s,2]
        gates = gates / gates.sum(-1, keepdims=True)
        choice = jax.nn.one_hot(experts, EXPERTS)  # [b,s,2,x]
        # slot of each (token, choice) in its expert's buffer: first choices fill first
        order = choice.transpose(0, 2, 1, 3).reshape(x.shape[0], -1, EXPERTS)  # [b,2s,x]
        slot = (jnp.cumsum(order, axis=1) - order).reshape(x.shape[0], 2, x.shape[1], EXPERTS)
        slot = (slot.transpose(0, 2, 1, 3) * choice).sum(-1)  # [b,s,2]
        kept = choice * (slot < CAPACITY)[..., None]
        dispatch = jnp.einsum("bskx,bskc->bsxc", kept, jax.nn.one_hot(slot.astype(jnp.int32), CAPACITY))
        combine = jnp.einsum("bsk,bskx,bskc->bsxc", gates, kept, jax.nn.one_hot(slot.astype(jnp.int32), CAPACITY))
        w1 = self.param("w1", nn.initializers.normal(0.05), (EXPERTS, WIDTH, 2 * WIDTH))
        w2 = self.param("w2", nn.initializers.normal(0.05), (EXPERTS, 2 * WIDTH, WIDTH))
        xin = jnp.einsum("bsxc,bsd->xbcd", dispatch, x)
        h = nn.gelu(jnp.einsum("xbcd,xdh->xbch", xin, w1))
        out = jnp.einsum("xbch,xhd->xbcd", h, w2)
        # Switch load-balancing loss: fraction of first choices x mean probability
        aux = EXPERTS * (choice[:, :, 0].mean((0, 1)) * probs.mean((0, 1))).sum()
        return jnp.einsum("bsxc,xbcd->bsd", combine, out), aux


class MoEBlock(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(VOCAB, WIDTH, embedding_init=nn.initializers.normal(0.02))
        x = embed(tokens)
        h = nn.LayerNorm()(x)
        mask = nn.make_causal_mask(tokens)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS, use_bias=False)(h, h, mask=mask)
        y, aux = MoE()(nn.LayerNorm()(x))
        return embed.attend(nn.LayerNorm()(x + y)), aux


def make(seed: int = 0) -> ModelCase:
    model = MoEBlock()
    optimizer = optax.adam(1e-3)
    kp, kb = jax.random.split(jax.random.PRNGKey(seed))
    batch = token_batch(kb, BATCH, SEQ, VOCAB)
    params = model.init(kp, batch["tokens"])["params"]

    def loss_fn(params, batch):
        logits, aux = model.apply({"params": params}, batch["tokens"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean() + 0.01 * aux

    return ModelCase("moe", grad_step(loss_fn, optimizer), (params, optimizer.init(params), batch))
