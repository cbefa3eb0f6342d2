"""The MLP stack: 6 Dense layers (ReLU between them), MSE loss, Adam. The classic first
auto-sharding test: "mlp-dp" (big batch, narrow layers) should come out data-parallel,
"mlp-tp" (small batch, wide layers) tensor-parallel.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from benchmarks.models._common import Spec, build_workload, init_from_specs


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    name: str
    batch: int
    hidden: int
    layers: int = 6
    dtype: str = "float32"


CONFIGS = {
    c.name: c
    for c in [
        MLPConfig("mlp-tiny", batch=32, hidden=64),
        MLPConfig("mlp-dp", batch=8192, hidden=512),
        MLPConfig("mlp-tp", batch=128, hidden=4096),
    ]
}


def param_specs(cfg: MLPConfig) -> list:
    # alternate the names of the two dims so consecutive layers pair up as Megatron's
    # column-parallel then row-parallel dense (one name per dim, never the same twice)
    h, scale = cfg.hidden, math.sqrt(1.0 / cfg.hidden)
    specs = []
    for i in range(cfg.layers):
        dims = ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed")
        specs.append({"w": Spec((h, h), dims, scale=scale), "b": Spec((h,), dims[1:], "zeros")})
    return specs


def batch_specs(cfg: MLPConfig) -> dict:
    x = lambda: Spec((cfg.batch, cfg.hidden), ("batch", "embed"))  # noqa: E731
    return {"x": x(), "y": x()}


def forward(params, x):
    for i, p in enumerate(params):
        x = x @ p["w"] + p["b"]
        if i < len(params) - 1:  # no ReLU on the regression output
            x = jax.nn.relu(x)
    return x


def loss(params, batch):
    err = (forward(params, batch["x"]) - batch["y"]).astype(jnp.float32)
    return jnp.mean(err**2)


def init_params(cfg: MLPConfig, key):
    return init_from_specs(param_specs(cfg), key, cfg.dtype)


def make_batch(cfg: MLPConfig, key):
    kx, ky = jax.random.split(key)
    shape = (cfg.batch, cfg.hidden)
    return {
        "x": jax.random.normal(kx, shape, jnp.float32).astype(cfg.dtype),
        "y": jax.random.normal(ky, shape, jnp.float32).astype(cfg.dtype),
    }


def make_workload(cfg: MLPConfig, optimizer=None):
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
    return build_workload(
        cfg.name, cfg, param_specs(cfg), batch_specs(cfg), loss, optimizer, cfg.layers
    )
