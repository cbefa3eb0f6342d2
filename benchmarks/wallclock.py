"""Measured step time of a compiled program on the devices at hand (the fake CPU mesh).

A secondary figure: 8 CPU "devices" share this machine's cores and memory, so the
numbers say little about a GPU cluster. They are reported as a ratio to data parallel
measured in the same run, never compared across runs.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def concrete_args(abstract: tuple, seed: int = 0) -> tuple:
    """Host arrays for ``ShapeDtypeStruct`` args: small normals for floats, zeros for the rest.

    Zeros are valid token ids, labels and step counters, so every model runs on them.
    """
    rng = np.random.default_rng(seed)

    def make(x):
        dtype = np.dtype(x.dtype)
        if jnp.issubdtype(dtype, jnp.floating):  # np.issubdtype misses bfloat16
            return (0.02 * rng.standard_normal(x.shape)).astype(dtype)
        return np.zeros(x.shape, dtype)

    return jax.tree_util.tree_map(make, abstract)


def median_step_s(compiled, host_args: tuple, repeats: int = 5) -> float:
    """Median wall time of ``compiled(*args)`` over ``repeats`` runs, after one warm-up."""
    shardings = compiled.input_shardings[0]
    args = jax.device_put(host_args, shardings)
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
