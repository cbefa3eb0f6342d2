"""GPT with a top-2 mixture-of-experts FFN in every other layer (GShard / Switch style),
with the shapes of Alpa's MoE benchmark table.

Routing builds one-hot dispatch/combine tensors `[batch, seq, experts, capacity]` and
moves tokens with einsums, so the whole layer is dots and elementwise ops a sharding
search can reason about. Each sequence is one routing group (GShard's "group"):
capacity is per expert per sequence. Expert kernels are stacked `[experts, embed, mlp]`.
"""

from __future__ import annotations

import dataclasses
import math

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
class MoEConfig:
    name: str
    hidden: int
    layers: int
    heads: int
    experts: int
    seq: int = 1024
    vocab: int = 32000
    batch: int = 32
    mlp_ratio: int = 8  # Alpa's MoE benchmark uses an 8x FFN (dense and expert layers)
    top_k: int = 2
    capacity_factor: float = 1.25
    aux_loss_coef: float = 0.01  # Switch load-balancing loss; 0 turns it off
    dtype: str = "float32"

    @property
    def mlp(self) -> int:
        return self.hidden * self.mlp_ratio

    @property
    def capacity(self) -> int:
        # expected tokens per expert in a sequence, times the slack factor
        return max(1, math.ceil(self.capacity_factor * self.top_k * self.seq / self.experts))

    def is_moe_layer(self, i: int) -> bool:
        return i % 2 == 1  # GShard: every other layer, starting with the second


CONFIGS = {
    c.name: c
    for c in [
        MoEConfig("moe-tiny", 128, 2, 4, 8, seq=64, vocab=512, batch=16),
        MoEConfig("moe-small", 256, 4, 8, 8, seq=128, vocab=1024, batch=16),
        MoEConfig("moe-medium-bf16", 768, 4, 16, 8, batch=32, dtype="bfloat16"),  # GPU-target rows
        # Alpa MoE table (seq 1024, vocab 32000, 16 heads)
        MoEConfig("moe-380M", 768, 8, 16, 8),
        MoEConfig("moe-690M", 768, 8, 16, 16),
        MoEConfig("moe-1.3B", 768, 16, 16, 16),
        MoEConfig("moe-2.4B", 1024, 16, 16, 16),
        MoEConfig("moe-7.1B", 1280, 16, 16, 32),
        MoEConfig("moe-10B", 1536, 16, 16, 32),
        MoEConfig("moe-27B", 2048, 16, 16, 48),
        MoEConfig("moe-70B", 2048, 32, 16, 64),
    ]
}


def moe_specs(cfg: MoEConfig, out_scale: float) -> dict:
    x, e, m = cfg.experts, cfg.hidden, cfg.mlp
    return {
        "router": Spec((e, x), ("embed", "experts")),
        "w1": Spec((x, e, m), ("experts", "embed", "mlp")),
        "b1": Spec((x, m), ("experts", "mlp"), "zeros"),
        "w2": Spec((x, m, e), ("experts", "mlp", "embed"), scale=out_scale),
        "b2": Spec((x, e), ("experts", "embed"), "zeros"),
    }


def param_specs(cfg: MoEConfig) -> dict:
    s = gpt.residual_scale(cfg.layers)

    def layer(i):
        ffn = moe_specs(cfg, s) if cfg.is_moe_layer(i) else gpt.mlp_specs(cfg.hidden, cfg.mlp, s)
        return {
            "ln1": ln_specs(cfg.hidden),
            "attn": gpt.attention_specs(cfg.hidden, cfg.heads, s),
            "ln2": ln_specs(cfg.hidden),
            ("moe" if cfg.is_moe_layer(i) else "mlp"): ffn,
        }

    return {
        "embed": gpt.embed_specs(cfg.vocab, cfg.seq, cfg.hidden),
        "layers": [layer(i) for i in range(cfg.layers)],
        "ln_f": ln_specs(cfg.hidden),
    }


batch_specs = gpt.batch_specs


def route(logits, top_k: int, capacity: int):
    """Top-k routing -> (combine [b,s,x,c] float32, aux load-balancing loss).

    Each token takes its k best experts in turn; within an expert, tokens fill the
    buffer in sequence order (first choices before second choices) and tokens past
    `capacity` are dropped (their combine weight is zero, the residual carries them).
    """
    num_experts = logits.shape[-1]
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    remaining, filled = probs, jnp.zeros_like(probs[:, :1, :])
    choices, slots = [], []
    for _ in range(top_k):
        choice = jax.nn.one_hot(jnp.argmax(remaining, axis=-1), num_experts)  # [b,s,x]
        remaining = remaining * (1.0 - choice)
        pos = jnp.cumsum(choice, axis=1) - choice + filled  # 0-based slot in the buffer
        filled = filled + choice.sum(axis=1, keepdims=True)
        keep = choice * (pos < capacity)
        choices.append(choice)
        slots.append(keep[..., None] * jax.nn.one_hot(pos.astype(jnp.int32), capacity))
    gates = [(probs * c).sum(-1) for c in choices]  # [b,s] each
    denom = sum(gates) + 1e-9  # GShard: renormalize over the k chosen experts
    combine = sum((g / denom)[..., None, None] * s for g, s in zip(gates, slots))
    # Switch aux loss: fraction routed (first choice) x mean router prob, per expert, per
    # routing group (GShard), here a sequence as for the capacity: averaged over the groups,
    # it is a per-example term, so the step can be cut into microbatches (a whole-batch
    # product of means would make shardsearch refuse to, as it would change the loss)
    aux = num_experts * (choices[0].mean(axis=1) * probs.mean(axis=1)).sum(-1).mean()
    return combine, aux


def moe_ffn(p, x, cfg: MoEConfig):
    combine, aux = route(x @ p["router"], cfg.top_k, cfg.capacity)
    dispatch = (combine > 0).astype(x.dtype)
    xin = jnp.einsum("bsxc,bsm->xbcm", dispatch, x)  # tokens into expert buffers
    h = jax.nn.gelu(jnp.einsum("xbcm,xmh->xbch", xin, p["w1"]) + p["b1"][:, None, None, :])
    out = jnp.einsum("xbch,xhm->xbcm", h, p["w2"]) + p["b2"][:, None, None, :]
    y = jnp.einsum("bsxc,xbcm->bsm", combine.astype(x.dtype), out)  # weighted back
    return y, aux


def forward(params, tokens, cfg: MoEConfig):
    x = gpt.embed(params["embed"], tokens, jnp.dtype(cfg.dtype))
    aux_total = jnp.zeros((), jnp.float32)
    for p in params["layers"]:
        x = x + gpt.attention(p["attn"], layer_norm(p["ln1"], x), causal=True)
        h = layer_norm(p["ln2"], x)
        if "moe" in p:
            y, aux = moe_ffn(p["moe"], h, cfg)
            aux_total = aux_total + aux
        else:
            y = gpt.mlp(p["mlp"], h)
        x = x + y
    return gpt.lm_logits(params["embed"], layer_norm(params["ln_f"], x)), aux_total


def loss_fn(cfg: MoEConfig):
    def loss(params, batch):
        logits, aux = forward(params, batch["tokens"], cfg)
        return cross_entropy(logits, batch["labels"]).mean() + cfg.aux_loss_coef * aux

    return loss


def init_params(cfg: MoEConfig, key):
    return init_from_specs(param_specs(cfg), key, cfg.dtype)


make_batch = gpt.make_batch


def make_workload(cfg: MoEConfig, optimizer=None):
    return build_workload(
        cfg.name, cfg, param_specs(cfg), batch_specs(cfg), loss_fn(cfg), optimizer, cfg.layers
    )
