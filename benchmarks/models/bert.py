"""BERT: post-LayerNorm bidirectional encoder with a masked-LM head (dense + GELU +
LayerNorm + tied decoder with its own bias). Shapes of BERT-base/large and Megatron-LM's
BERT table; no token-type embeddings, no NSP head, no dropout (they do not change the
parallelization problem). Layers are reused from `gpt.py`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from benchmarks.models import gpt
from benchmarks.models._common import (
    Spec,
    build_workload,
    cross_entropy,
    init_from_specs,
    layer_norm,
    ln_specs,
)


@dataclasses.dataclass(frozen=True)
class BERTConfig:
    name: str
    hidden: int
    layers: int
    heads: int
    seq: int = 512
    # BERT's 30522 padded up to a multiple of 128 (as Megatron does) so vocab shards evenly
    vocab: int = 30592
    batch: int = 32
    mlp_ratio: int = 4
    dtype: str = "float32"

    @property
    def mlp(self) -> int:
        return self.hidden * self.mlp_ratio


CONFIGS = {
    c.name: c
    for c in [
        BERTConfig("bert-tiny", 128, 2, 4, seq=64, vocab=512, batch=16),
        BERTConfig("bert-small", 256, 4, 8, seq=128, vocab=1024, batch=16),
        BERTConfig("bert-medium-bf16", 1024, 8, 16, batch=32, dtype="bfloat16"),  # GPU-target rows
        BERTConfig("bert-base", 768, 12, 12),
        BERTConfig("bert-large", 1024, 24, 16),
        # Megatron-LM BERT scaling table
        BERTConfig("bert-1.3B", 2048, 24, 32),
        BERTConfig("bert-3.9B", 2560, 48, 40),
    ]
}


def param_specs(cfg: BERTConfig) -> dict:
    s = gpt.residual_scale(cfg.layers)
    layer = lambda: {  # noqa: E731
        "attn": gpt.attention_specs(cfg.hidden, cfg.heads, s),
        "ln1": ln_specs(cfg.hidden),
        "mlp": gpt.mlp_specs(cfg.hidden, cfg.mlp, s),
        "ln2": ln_specs(cfg.hidden),
    }
    return {
        "embed": gpt.embed_specs(cfg.vocab, cfg.seq, cfg.hidden),
        "ln_embed": ln_specs(cfg.hidden),
        "layers": [layer() for _ in range(cfg.layers)],
        "mlm": {
            # embed -> embed: only one dim named, so a baseline never maps two dims of
            # one tensor to the same mesh axis (Megatron keeps this dense replicated)
            "dense": Spec((cfg.hidden, cfg.hidden), ("embed", None)),
            "bias": Spec((cfg.hidden,), (None,), "zeros"),
            "ln": ln_specs(cfg.hidden),
            "out_bias": Spec((cfg.vocab,), ("vocab",), "zeros"),
        },
    }


def batch_specs(cfg: BERTConfig) -> dict:
    shape, axes = (cfg.batch, cfg.seq), ("batch", "seq")
    return {
        "tokens": Spec(shape, axes, dtype="int32"),
        "labels": Spec(shape, axes, dtype="int32"),
        "mask": Spec(shape, axes),  # 1.0 where the position is predicted, in cfg.dtype
    }


def encoder_layer(p, x):
    x = layer_norm(p["ln1"], x + gpt.attention(p["attn"], x, causal=False))
    return layer_norm(p["ln2"], x + gpt.mlp(p["mlp"], x))


def forward(params, tokens, cfg: BERTConfig):
    x = layer_norm(params["ln_embed"], gpt.embed(params["embed"], tokens, jnp.dtype(cfg.dtype)))
    for p in params["layers"]:
        x = encoder_layer(p, x)
    m = params["mlm"]
    h = layer_norm(m["ln"], jax.nn.gelu(x @ m["dense"] + m["bias"]))
    return gpt.lm_logits(params["embed"], h) + m["out_bias"]


def loss_fn(cfg: BERTConfig):
    def loss(params, batch):
        ce = cross_entropy(forward(params, batch["tokens"], cfg), batch["labels"])
        mask = batch["mask"].astype(jnp.float32)
        return (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    return loss


def init_params(cfg: BERTConfig, key):
    return init_from_specs(param_specs(cfg), key, cfg.dtype)


def make_batch(cfg: BERTConfig, key):
    k1, k2, k3 = jax.random.split(key, 3)
    shape = (cfg.batch, cfg.seq)
    return {
        "tokens": jax.random.randint(k1, shape, 0, cfg.vocab, jnp.int32),
        "labels": jax.random.randint(k2, shape, 0, cfg.vocab, jnp.int32),
        # BERT predicts ~15% of positions
        "mask": jax.random.bernoulli(k3, 0.15, shape).astype(cfg.dtype),
    }


def make_workload(cfg: BERTConfig, optimizer=None):
    return build_workload(
        cfg.name, cfg, param_specs(cfg), batch_specs(cfg), loss_fn(cfg), optimizer, cfg.layers
    )
