"""Pieces the benchmark models share: parameter specs (shape + logical axes + init in one
place), abstract argument building, optimizer-state axes, and a few layers.

A model describes its parameters once, as a pytree of `Spec`s. From that one tree we
derive the abstract params (ShapeDtypeStructs, nothing allocated), their logical axes,
the parameter count and, for tests, real random arrays.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.models.base import LOGICAL_AXES, Workload


@dataclasses.dataclass(frozen=True)
class Spec:
    """One argument leaf. A plain (unregistered) dataclass, so pytrees treat it as a leaf."""

    shape: tuple
    axes: tuple  # one LOGICAL_AXES name (or None) per dim
    init: str = "normal"  # "normal" | "zeros" | "ones"
    scale: float = 0.02  # stddev for "normal"
    dtype: Any = None  # None: the model's dtype

    def __post_init__(self):
        if len(self.axes) != len(self.shape):
            raise ValueError(f"Spec axes {self.axes} do not match shape {self.shape}")
        unknown = [a for a in self.axes if a is not None and a not in LOGICAL_AXES]
        if unknown:
            raise ValueError(f"unknown logical axes {unknown}; use names from LOGICAL_AXES")


def is_spec(x) -> bool:
    return isinstance(x, Spec)


def is_axes_leaf(x) -> bool:
    """Leaf test for logical-axes trees: a plain tuple of names/None (so `()` counts,
    but optax's empty NamedTuple states such as EmptyState() do not)."""
    return type(x) is tuple and all(a is None or isinstance(a, str) for a in x)


def abstract(specs, dtype):
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, jnp.dtype(s.dtype or dtype)), specs, is_leaf=is_spec
    )


def spec_axes(specs):
    return jax.tree_util.tree_map(lambda s: s.axes, specs, is_leaf=is_spec)


def count(specs) -> int:
    return sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(specs, is_leaf=is_spec))


def init_from_specs(specs, key, dtype):
    """Real random arrays for small configs (tests, examples). One normal draw for all
    leaves, sliced on the host: one small compile instead of one per leaf shape."""
    leaves, treedef = jax.tree_util.tree_flatten(specs, is_leaf=is_spec)
    sizes = [math.prod(s.shape) for s in leaves]
    flat = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))
    out, offset = [], 0
    for s, n in zip(leaves, sizes):
        if s.init == "zeros":
            x = np.zeros(s.shape, np.float32)
        elif s.init == "ones":
            x = np.ones(s.shape, np.float32)
        else:
            x = flat[offset : offset + n].reshape(s.shape) * s.scale
        offset += n
        out.append(jnp.asarray(x, jnp.dtype(s.dtype or dtype)))
    return jax.tree_util.tree_unflatten(treedef, out)


def _key_names(path) -> tuple:
    return tuple(str(k) for k in path)


def opt_state_axes(opt_state, param_specs):
    """Logical axes for every optimizer-state leaf.

    optax states embed copies of the params tree (Adam's mu/nu) inside NamedTuples and
    chains, so we match each state leaf to the parameter whose path is the longest
    suffix of the leaf's path and has the same shape. Scalars (step counters) get `()`.
    Anything else (e.g. Adafactor's factored moments) gets all-None: unknown, replicate.
    """
    table = {
        _key_names(p): s
        for p, s in jax.tree_util.tree_flatten_with_path(param_specs, is_leaf=is_spec)[0]
    }

    def axes_for(path, leaf):
        names = _key_names(path)
        for i in range(len(names)):  # longest suffix first
            s = table.get(names[i:])
            if s is not None and tuple(s.shape) == tuple(leaf.shape):
                return s.axes
        return (None,) * len(leaf.shape)

    return jax.tree_util.tree_map_with_path(axes_for, opt_state)


def make_train_step(loss_fn: Callable, optimizer) -> Callable:
    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def build_workload(name, config, param_specs, batch_specs, loss_fn, optimizer, num_layers):
    """Abstract (params, opt_state, batch), their logical axes and the jit-able step."""
    optimizer = optimizer if optimizer is not None else optax.adamw(1e-4)
    params = abstract(param_specs, config.dtype)
    opt_state = jax.eval_shape(optimizer.init, params)
    batch = abstract(batch_specs, config.dtype)
    axes = (spec_axes(param_specs), opt_state_axes(opt_state, param_specs), spec_axes(batch_specs))
    return Workload(
        name=name,
        train_step=make_train_step(loss_fn, optimizer),
        args=(params, opt_state, batch),
        logical_axes=axes,
        num_layers=num_layers,
        params_count=count(param_specs),
        config=config,
    )


# ----------------------------------------------------------------------------- layers


def ln_specs(dim: int, axis: str = "embed") -> dict:
    return {"scale": Spec((dim,), (axis,), "ones"), "bias": Spec((dim,), (axis,), "zeros")}


def layer_norm(p, x, eps=1e-5):
    # statistics in float32 so bf16 configs stay stable; a no-op for float32
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
    y = ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)
    return y * p["scale"] + p["bias"]


def cross_entropy(logits, labels):
    """Per-position cross-entropy. The label pick is a one-hot product, not
    take_along_axis, because the project's gather strategy rule is not ready yet."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -(jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32) * logp).sum(-1)
