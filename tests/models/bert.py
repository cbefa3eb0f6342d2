"""BERT-style encoder in Flax linen: post-LN blocks, dropout, masked-LM head tied to
the token embedding; the loss counts only the masked positions."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from models.common import ModelCase, grad_step

VOCAB, SEQ, WIDTH, HEADS, LAYERS, BATCH, DROPOUT = 64, 16, 32, 4, 2, 8, 0.1
MASK_ID = 0


class EncoderBlock(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x, pad_mask, train: bool):
        h = nn.MultiHeadDotProductAttention(num_heads=self.heads, dropout_rate=DROPOUT, deterministic=not train,
                                            use_bias=False)(
            x, x, mask=nn.make_attention_mask(pad_mask, pad_mask)
        )
        x = nn.LayerNorm()(x + nn.Dropout(DROPOUT, deterministic=not train)(h))
        h = nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(x)))
        return nn.LayerNorm()(x + nn.Dropout(DROPOUT, deterministic=not train)(h))


class BERT(nn.Module):
    @nn.compact
    def __call__(self, tokens, segments, train: bool = True):
        embed = nn.Embed(VOCAB, WIDTH, embedding_init=nn.initializers.normal(0.02))
        x = embed(tokens) + nn.Embed(2, WIDTH)(segments)
        x = x + self.param("pos", nn.initializers.normal(0.02), (SEQ, WIDTH))[None]
        x = nn.Dropout(DROPOUT, deterministic=not train)(nn.LayerNorm()(x))
        pad_mask = tokens >= 0  # no padding in these batches; the mask is still built
        for _ in range(LAYERS):
            x = EncoderBlock(WIDTH, HEADS)(x, pad_mask, train)
        h = nn.LayerNorm()(nn.gelu(nn.Dense(WIDTH)(x)))  # MLM transform
        return embed.attend(h) + self.param("mlm_bias", nn.initializers.zeros, (VOCAB,))


def make(seed: int = 0, optimizer=None) -> ModelCase:
    """``optimizer``: an optax optimizer (default AdamW)."""
    model = BERT()
    optimizer = optimizer or optax.adamw(1e-3)
    kp, kt, km, ks, kd = jax.random.split(jax.random.PRNGKey(seed), 5)
    labels = jax.random.randint(kt, (BATCH, SEQ), 1, VOCAB)
    masked = jax.random.bernoulli(km, 0.25, (BATCH, SEQ))
    batch = {
        "tokens": jnp.where(masked, MASK_ID, labels),
        "segments": jax.random.randint(ks, (BATCH, SEQ), 0, 2),
        "labels": labels,
        "weights": masked.astype(jnp.float32),
        "dropout_key": kd,  # a raw uint32 key: dropout draws the same bits every step
    }
    params = model.init(kp, batch["tokens"], batch["segments"], train=False)["params"]

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["tokens"], batch["segments"],
                             rngs={"dropout": batch["dropout_key"]})
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        return (xent * batch["weights"]).sum() / jnp.maximum(batch["weights"].sum(), 1.0)

    return ModelCase("bert", grad_step(loss_fn, optimizer), (params, optimizer.init(params), batch))
