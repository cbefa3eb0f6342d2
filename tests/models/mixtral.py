"""A Mixtral / Qwen3-MoE style decoder in plain JAX, trained with AdamW.

Two layers of RMSNorm -> causal attention -> RMSNorm -> a sparse MoE of SwiGLU experts.
Routing as in Qwen3-MoE: softmax over all experts, ``lax.top_k`` picks two, their
probabilities renormalized to sum to one (Mixtral's softmax over the top-k logits gives the
same weights). Dispatch by *gather*, not one-hot einsums: each sequence is a routing
group (so a batch split keeps tokens on their device, as GShard groups do); the
(token, choice) pairs are ranked within their expert by a cumulative count, those past
the expert's capacity are dropped, a scatter writes each kept token's index into its
expert's slot table, and a gather fetches the tokens into [group, expert, capacity, width]
buffers; a second gather brings the experts' outputs back to the tokens, weighted by
their gates. The auxiliary load-balancing loss is Switch/Mixtral's: experts x sum over
experts of (fraction of routed choices) x (mean router probability).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from models.common import ModelCase, token_batch

VOCAB, SEQ, WIDTH, HEADS, FFN, EXPERTS, TOP_K, LAYERS, BATCH = 64, 16, 32, 4, 48, 8, 2, 2, 8
CAPACITY = math.ceil(SEQ * TOP_K / EXPERTS * 1.25)  # slots per expert per sequence
AUX_WEIGHT = 0.01


def init(key) -> dict:
    keys = iter(jax.random.split(key, 4 + 6 * LAYERS))
    normal = lambda shape, scale: scale * jax.random.normal(next(keys), shape)  # noqa: E731
    layers = []
    for _ in range(LAYERS):
        layers.append({
            "attn_norm": jnp.ones((WIDTH,)),
            "qkv": normal((WIDTH, 3, HEADS, WIDTH // HEADS), WIDTH ** -0.5),
            "out": normal((HEADS, WIDTH // HEADS, WIDTH), WIDTH ** -0.5),
            "moe_norm": jnp.ones((WIDTH,)),
            "router": normal((WIDTH, EXPERTS), 0.02),
            "gate": normal((EXPERTS, WIDTH, FFN), WIDTH ** -0.5),
            "up": normal((EXPERTS, WIDTH, FFN), WIDTH ** -0.5),
            "down": normal((EXPERTS, FFN, WIDTH), FFN ** -0.5),
        })
    return {"embed": normal((VOCAB, WIDTH), 0.02), "layers": layers, "final_norm": jnp.ones((WIDTH,))}


def rms_norm(x, scale):
    return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6) * scale


def attention(x, p):
    q, k, v = jnp.einsum("bsd,dthk->tbshk", x, p["qkv"])
    scores = jnp.einsum("bshk,bthk->bhst", q, k) / math.sqrt(q.shape[-1])
    causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
    return jnp.einsum("bhst,bthk,hkd->bsd", weights, v, p["out"])


def route(x, router):
    """Per group: (expert of each choice [s*k], gate [s*k], slot in the expert [s*k], kept
    [s*k], router probabilities [s, experts])."""
    probs = jax.nn.softmax(x @ router, axis=-1)
    gates, experts = jax.lax.top_k(probs, TOP_K)
    gates = gates / gates.sum(-1, keepdims=True)
    experts, gates = experts.reshape(-1), gates.reshape(-1)  # token-major: token 0's choices first
    chosen = jax.nn.one_hot(experts, EXPERTS, dtype=jnp.int32)
    slot = ((jnp.cumsum(chosen, axis=0) - 1) * chosen).sum(-1)  # rank among the expert's choices
    return experts, gates, slot, slot < CAPACITY, probs


def moe_group(x, p):
    """One sequence [s, d] through the sparse MoE; returns ([s, d], aux loss)."""
    experts, gates, slot, kept, probs = route(x, p["router"])
    token = jnp.arange(SEQ * TOP_K) // TOP_K
    flat = jnp.where(kept, experts * CAPACITY + slot, EXPERTS * CAPACITY)  # dropped: out of range
    table = jnp.zeros(EXPERTS * CAPACITY, jnp.int32).at[flat].set(token, mode="drop")
    filled = jnp.zeros(EXPERTS * CAPACITY, x.dtype).at[flat].set(1.0, mode="drop")
    xin = (x[table] * filled[:, None]).reshape(EXPERTS, CAPACITY, WIDTH)  # dispatch: a gather
    h = jax.nn.silu(jnp.einsum("ecd,edf->ecf", xin, p["gate"])) * jnp.einsum("ecd,edf->ecf", xin, p["up"])
    out = jnp.einsum("ecf,efd->ecd", h, p["down"]).reshape(EXPERTS * CAPACITY, WIDTH)
    back = out[jnp.minimum(flat, EXPERTS * CAPACITY - 1)] * (gates * kept)[:, None]  # combine: a gather
    y = back.reshape(SEQ, TOP_K, WIDTH).sum(1)
    routed = jax.nn.one_hot(experts, EXPERTS).mean(0)  # fraction of the choices each expert got
    aux = EXPERTS * (routed * probs.mean(0)).sum()
    return y, aux


def forward(params, tokens):
    x = params["embed"][tokens]
    aux = 0.0
    for p in params["layers"]:
        x = x + attention(rms_norm(x, p["attn_norm"]), p)
        y, a = jax.vmap(moe_group, in_axes=(0, None))(rms_norm(x, p["moe_norm"]), p)
        x, aux = x + y, aux + a.mean()
    return rms_norm(x, params["final_norm"]) @ params["embed"].T, aux


def make(seed: int = 0) -> ModelCase:
    optimizer = optax.adamw(1e-3, weight_decay=0.01)
    kp, kb = jax.random.split(jax.random.PRNGKey(seed))
    params = init(kp)
    batch = token_batch(kb, BATCH, SEQ, VOCAB)

    def loss_fn(params, batch):
        logits, aux = forward(params, batch["tokens"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
        return ce + AUX_WEIGHT * aux

    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return ModelCase("mixtral", train_step, (params, optimizer.init(params), batch))
