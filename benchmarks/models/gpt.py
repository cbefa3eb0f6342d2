"""GPT: decoder-only LM (pre-LayerNorm, causal multi-head attention, 4x GELU MLP, tied
input/output embedding), with the shapes of Alpa's GPT benchmark table.

Q, K, V and O are separate `[embed, heads, head_dim]` / `[heads, head_dim, embed]`
kernels (not one fused QKV matrix) so a Megatron baseline can split by head without
cutting across a concatenation. `bert.py` and `moe.py` reuse the layers defined here.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from benchmarks.models._common import (
    Spec,
    build_workload,
    cross_entropy,
    init_from_specs,
    layer_norm,
    ln_specs,
)


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    name: str
    hidden: int
    layers: int
    heads: int
    seq: int = 1024
    vocab: int = 51200
    batch: int = 32
    mlp_ratio: int = 4
    dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def mlp(self) -> int:
        return self.hidden * self.mlp_ratio


CONFIGS = {
    c.name: c
    for c in [
        GPTConfig("gpt-tiny", 128, 2, 4, seq=64, vocab=512, batch=16),
        GPTConfig("gpt-small", 256, 4, 8, seq=128, vocab=1024, batch=16),
        # GPU-target rows (compiled for the cluster's GPUs, never run here): bf16, real widths
        GPTConfig("gpt-medium-bf16", 1024, 8, 16, seq=1024, batch=32, dtype="bfloat16"),
        # Alpa GPT table (seq 1024, vocab 51200)
        GPTConfig("gpt-350M", 1024, 24, 16),
        GPTConfig("gpt-1.3B", 2048, 24, 32),
        GPTConfig("gpt-2.6B", 2560, 32, 32),
        GPTConfig("gpt-6.7B", 4096, 32, 32),
        GPTConfig("gpt-15B", 5120, 48, 40),
        GPTConfig("gpt-39B", 8192, 48, 64),
        # slices of Alpa's GPTs (its widths, fewer layers) for pipeline rows across nodes:
        # deep enough for a stage per node, small enough for CPU compiles of every stage
        # (float32: XLA's CPU compiler computes float16 dots in float32, so a float16 program
        # compiled for fake CPU devices carries float32 copies a GPU's would not)
        GPTConfig("gpt-350M-8L", 1024, 8, 16),
        GPTConfig("gpt-1.3B-8L", 2048, 8, 32),
        GPTConfig("gpt-1.3B-16L", 2048, 16, 32),
    ]
}


# ----------------------------------------------------------------------------- specs


def embed_specs(vocab: int, seq: int, hidden: int) -> dict:
    return {
        "wte": Spec((vocab, hidden), ("vocab", "embed")),
        "wpe": Spec((seq, hidden), ("seq", "embed"), scale=0.01),
    }


def attention_specs(hidden: int, heads: int, out_scale: float = 0.02) -> dict:
    d = hidden // heads
    qkv = lambda: Spec((hidden, heads, d), ("embed", "heads", "head_dim"))  # noqa: E731
    bias = lambda: Spec((heads, d), ("heads", "head_dim"), "zeros")  # noqa: E731
    return {
        "q": qkv(), "k": qkv(), "v": qkv(),
        "bq": bias(), "bk": bias(), "bv": bias(),
        "o": Spec((heads, d, hidden), ("heads", "head_dim", "embed"), scale=out_scale),
        "bo": Spec((hidden,), ("embed",), "zeros"),
    }  # fmt: skip


def mlp_specs(hidden: int, mlp: int, out_scale: float = 0.02) -> dict:
    return {
        "fc1": Spec((hidden, mlp), ("embed", "mlp")),
        "b1": Spec((mlp,), ("mlp",), "zeros"),
        "fc2": Spec((mlp, hidden), ("mlp", "embed"), scale=out_scale),
        "b2": Spec((hidden,), ("embed",), "zeros"),
    }


def residual_scale(layers: int) -> float:
    # GPT-2: shrink the residual-branch output projections by 1/sqrt(2 * layers)
    return 0.02 / math.sqrt(2 * layers)


def block_specs(cfg: GPTConfig) -> dict:
    s = residual_scale(cfg.layers)
    return {
        "ln1": ln_specs(cfg.hidden),
        "attn": attention_specs(cfg.hidden, cfg.heads, s),
        "ln2": ln_specs(cfg.hidden),
        "mlp": mlp_specs(cfg.hidden, cfg.mlp, s),
    }


def param_specs(cfg: GPTConfig) -> dict:
    return {
        "embed": embed_specs(cfg.vocab, cfg.seq, cfg.hidden),
        # a Python list of layers (unrolled), not a scanned stack: the search sees
        # every layer and dedups the repeats itself
        "layers": [block_specs(cfg) for _ in range(cfg.layers)],
        "ln_f": ln_specs(cfg.hidden),
    }


def batch_specs(cfg: GPTConfig) -> dict:
    tok = lambda: Spec((cfg.batch, cfg.seq), ("batch", "seq"), dtype="int32")  # noqa: E731
    return {"tokens": tok(), "labels": tok()}


# ----------------------------------------------------------------------------- layers


def embed(p, tokens, dtype):
    # one-hot @ table (a matmul) instead of a gather: the project's gather strategy
    # rule is not ready, and a matmul shards along vocab like any other dot
    x = jax.nn.one_hot(tokens, p["wte"].shape[0], dtype=dtype) @ p["wte"]
    return x + p["wpe"]  # batches always hold exactly cfg.seq positions


def attention(p, x, causal: bool):
    d = p["q"].shape[-1]
    q = jnp.einsum("bse,ehd->bshd", x, p["q"]) + p["bq"]
    k = jnp.einsum("bse,ehd->bshd", x, p["k"]) + p["bk"]
    v = jnp.einsum("bse,ehd->bshd", x, p["v"]) + p["bv"]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    if causal:
        s = x.shape[1]
        mask = jnp.tril(jnp.ones((s, s), dtype=bool))
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    # softmax in float32 so bf16 configs stay stable
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(x.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    return jnp.einsum("bqhd,hde->bqe", out, p["o"]) + p["bo"]


def mlp(p, x):
    return jax.nn.gelu(x @ p["fc1"] + p["b1"]) @ p["fc2"] + p["b2"]


def block(p, x):
    x = x + attention(p["attn"], layer_norm(p["ln1"], x), causal=True)
    return x + mlp(p["mlp"], layer_norm(p["ln2"], x))


def lm_logits(p_embed, x):
    return jnp.einsum("bse,ve->bsv", x, p_embed["wte"])  # tied output embedding


def forward(params, tokens, cfg: GPTConfig):
    x = embed(params["embed"], tokens, jnp.dtype(cfg.dtype))
    for p in params["layers"]:
        x = block(p, x)
    return lm_logits(params["embed"], layer_norm(params["ln_f"], x))


def loss_fn(cfg: GPTConfig):
    def loss(params, batch):
        logits = forward(params, batch["tokens"], cfg)
        return cross_entropy(logits, batch["labels"]).mean()

    return loss


# ----------------------------------------------------------------------------- API


def init_params(cfg: GPTConfig, key):
    return init_from_specs(param_specs(cfg), key, cfg.dtype)


def make_batch(cfg: GPTConfig, key):
    # labels are the next token of the same random stream
    stream = jax.random.randint(key, (cfg.batch, cfg.seq + 1), 0, cfg.vocab, jnp.int32)
    return {"tokens": stream[:, :-1], "labels": stream[:, 1:]}


def make_workload(cfg: GPTConfig, optimizer=None):
    return build_workload(
        cfg.name, cfg, param_specs(cfg), batch_specs(cfg), loss_fn(cfg), optimizer, cfg.layers
    )
