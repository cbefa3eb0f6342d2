"""Small models from the libraries users bring, as ``train_step(params, opt_state, batch)``.

Each builder makes its model from a config with random weights (no network, no hub) and
returns a Case like tests/models: ``train_step`` returns (params, opt_state, loss), SGD
with momentum. Libraries are optional extras (``pip install 'shardsearch[thirdparty]'``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

B, T, D, V = 8, 32, 64, 256  # batch, sequence, width, vocabulary: small, shardable by 8


@dataclasses.dataclass
class Case:
    train_step: Callable
    args: tuple  # (params, opt_state, batch)


def _case(apply: Callable, params: Any, batch: dict, loss: str = "xent") -> Case:
    """SGD with momentum on ``apply(params, batch) -> logits`` (xent) or features (mse)."""
    import jax
    import jax.numpy as jnp
    import optax

    opt = optax.sgd(1e-2, momentum=0.9)

    def loss_fn(p, batch):
        out = apply(p, batch).astype(jnp.float32)
        if loss == "xent":
            return optax.softmax_cross_entropy_with_integer_labels(out, batch["labels"]).mean()
        return jnp.mean(out ** 2)

    def train_step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return Case(train_step, (params, opt.init(params), batch))


def _tokens():
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"tokens": jax.random.randint(k1, (B, T), 0, V, jnp.int32),
            "labels": jax.random.randint(k2, (B, T), 0, V, jnp.int32)}


def flax_linen():
    import flax.linen as nn
    import jax

    class Block(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(V, D)(tokens)
            for _ in range(2):
                x = x + nn.SelfAttention(num_heads=4)(nn.LayerNorm()(x))
                x = x + nn.Dense(D)(nn.gelu(nn.Dense(4 * D)(nn.LayerNorm()(x))))
            return nn.Dense(V)(x)

    model, batch = Block(), _tokens()
    params = model.init(jax.random.PRNGKey(1), batch["tokens"])
    return _case(lambda p, b: model.apply(p, b["tokens"]), params, batch)


def flax_nnx():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(V, D, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(4, D, decode=False, rngs=rngs)
            self.norm = nnx.LayerNorm(D, rngs=rngs)
            self.up, self.down = nnx.Linear(D, 4 * D, rngs=rngs), nnx.Linear(4 * D, D, rngs=rngs)
            self.out = nnx.Linear(D, V, rngs=rngs)

        def __call__(self, tokens):
            x = self.embed(tokens)
            x = x + self.attn(self.norm(x))
            x = x + self.down(nnx.gelu(self.up(x)))
            return self.out(x)

    graphdef, params = nnx.split(Model(nnx.Rngs(0)))
    return _case(lambda p, b: nnx.merge(graphdef, p)(b["tokens"]), params, _tokens())


def equinox():
    import equinox as eqx
    import jax

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    model = (eqx.nn.Embedding(V, D, key=keys[0]), eqx.nn.MultiheadAttention(4, D, key=keys[1]),
             eqx.nn.MLP(D, D, 4 * D, 1, key=keys[2]), eqx.nn.Linear(D, V, key=keys[3]))
    params, static = eqx.partition(model, eqx.is_array)

    def apply(p, b):
        embed, attn, mlp, out = eqx.combine(p, static)

        def one(tokens):
            x = jax.vmap(embed)(tokens)
            x = x + attn(x, x, x)
            x = x + jax.vmap(mlp)(x)
            return jax.vmap(out)(x)

        return jax.vmap(one)(b["tokens"])

    return _case(apply, params, _tokens())


def haiku():
    import haiku as hk
    import jax

    def forward(tokens):
        x = hk.Embed(V, D)(tokens)
        for _ in range(2):
            h = hk.LayerNorm(-1, True, True)(x)
            x = x + hk.MultiHeadAttention(4, D // 4, w_init=hk.initializers.VarianceScaling(1.0))(h, h, h)
            x = x + hk.nets.MLP([4 * D, D])(hk.LayerNorm(-1, True, True)(x))
        return hk.Linear(V)(x)

    model, batch = hk.without_apply_rng(hk.transform(forward)), _tokens()
    params = model.init(jax.random.PRNGKey(0), batch["tokens"])
    return _case(lambda p, b: model.apply(p, b["tokens"]), params, batch)


def hf_flax_gpt2():
    from transformers import FlaxGPT2LMHeadModel, GPT2Config

    config = GPT2Config(vocab_size=V, n_positions=T, n_embd=D, n_layer=2, n_head=4)
    model = FlaxGPT2LMHeadModel(config, seed=0)
    return _case(lambda p, b: model(b["tokens"], params=p, train=False).logits, model.params, _tokens())


def hf_flax_bert():
    from transformers import BertConfig, FlaxBertForMaskedLM

    config = BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=4 * D, max_position_embeddings=T)
    model = FlaxBertForMaskedLM(config, seed=0)
    return _case(lambda p, b: model(b["tokens"], params=p, train=False).logits, model.params, _tokens())


def _keras_backbone(make_backbone: Callable):
    """A keras-hub backbone on the JAX backend: stateless_call over its variables' values."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError("keras runs on another backend: set KERAS_BACKEND=jax before importing keras")
    backbone = make_backbone()
    trainable = [v.value for v in backbone.trainable_variables]
    fixed = [v.value for v in backbone.non_trainable_variables]
    # logits from the token embedding (tied, as the CausalLM heads do)
    table = next(i for i, v in enumerate(backbone.trainable_variables) if v is backbone.token_embedding.embeddings)

    def apply(p, b):
        import jax.numpy as jnp

        inputs = {"token_ids": b["tokens"], "padding_mask": jnp.ones_like(b["tokens"])}
        hidden, _ = backbone.stateless_call(p, fixed, inputs)
        return hidden @ p[table].T

    return _case(apply, trainable, _tokens())


def keras_qwen3_moe():
    def make():
        import keras_hub

        return keras_hub.models.Qwen3MoeBackbone(
            vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
            intermediate_dim=2 * D, moe_intermediate_dim=D, num_experts=4, head_dim=16, top_k=2)

    return _keras_backbone(make)


def keras_mixtral():
    def make():
        import keras_hub

        return keras_hub.models.MixtralBackbone(
            vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
            intermediate_dim=2 * D, num_experts=4, top_k=2)

    return _keras_backbone(make)


def penzai_llama():
    import jax
    from penzai import pz
    from penzai.models.transformer.variants import llamalike_common

    config = llamalike_common.LlamalikeTransformerConfig(
        num_kv_heads=2, query_head_multiplier=2, embedding_dim=D, projection_dim=16, mlp_hidden_dim=2 * D,
        num_decoder_blocks=2, vocab_size=V, mlp_variant="swiglu", rope_wavelength=10_000, tie_embedder_and_logits=True)
    model = llamalike_common.build_llamalike_transformer(config, init_base_rng=jax.random.PRNGKey(0))
    unbound, variables = pz.unbind_params(model)
    params = {v.label: v.value for v in variables}

    def apply(p, b):
        bound = pz.bind_variables(unbound, [pz.Parameter(value=p[v.label], label=v.label) for v in variables])
        tokens = pz.nx.wrap(b["tokens"]).tag("batch", "seq")
        out = bound(tokens)
        return out.untag("batch", "seq", "vocabulary").unwrap()

    return _case(apply, params, _tokens())


MODELS: dict[str, Callable[[], Case]] = {
    "flax-linen transformer": flax_linen,
    "flax-nnx transformer": flax_nnx,
    "equinox transformer": equinox,
    "haiku transformer": haiku,
    "hf-flax gpt2": hf_flax_gpt2,
    "hf-flax bert": hf_flax_bert,
    "keras-hub qwen3-moe": keras_qwen3_moe,
    "keras-hub mixtral": keras_mixtral,
    "penzai llama": penzai_llama,
}
