"""The data-parallel and FSDP baselines of benchmarks/models_vs_baselines.py, built from
argument positions alone: the specs they give a toy pytree, and that the compiled
baselines keep the step's numerics and emit the collectives that define them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh

from benchmarks.models_vs_baselines import (
    DATA_PARALLEL, FSDP, axis_groups, baseline_specs, batch_size, compile_with_specs, markdown, Row,
)
from helpers import assert_trees_close, collectives, concrete_mlp_args, make_train_step

NAMES, SIZES = ("data", "model"), (2, 4)
BOTH = ("data", "model")


def toy_args(batch=8):
    s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    params = {"w": s(3, 16), "v": s(12, 4), "odd": s(3, 5), "scale": s()}
    opt_state = (s(), {"mu": s(3, 16)})  # a step count and a moment
    data = {"x": s(batch, 5), "y": s(batch), "key": jax.ShapeDtypeStruct((2,), jnp.uint32)}
    return params, opt_state, data


def test_axis_groups_biggest_first_and_skip_unit_axes():
    assert axis_groups(NAMES, SIZES) == [BOTH, ("model",), ("data",)]
    assert axis_groups(("a", "b", "c"), (2, 1, 2)) == [("a", "c"), ("a",), ("c",)]


def test_batch_size_is_the_common_leading_dim_not_a_key():
    assert batch_size([(8, 5), (8,), (2,), ()]) == 8
    assert batch_size([()]) is None


def test_data_parallel_splits_only_per_example_leaves():
    specs = baseline_specs(toy_args(), NAMES, SIZES, DATA_PARALLEL)
    # flat order: params (odd, scale, v, w), opt_state (count, mu), batch (key, x, y)
    assert specs == [((), ()), (), ((), ()), ((), ()), (), ((), ()), ((),), (BOTH, ()), (BOTH,)]
    # a batch that only the 2-wide axis divides is split over it alone
    assert baseline_specs(toy_args(batch=6), NAMES, SIZES, DATA_PARALLEL)[-1] == (("data",),)


def test_fsdp_splits_the_largest_dim_the_axes_divide():
    specs = baseline_specs(toy_args(), NAMES, SIZES, FSDP)
    odd, scale, v, w, count, mu = specs[:6]
    assert w == ((), BOTH) and mu == ((), BOTH)  # 16 over all 8 devices
    assert v == (("model",), ())  # 8 divides neither dim; 4 divides both: the larger (12)
    assert odd == ((), ()) and scale == () and count == ()  # nothing divides: replicated
    assert specs[6:] == baseline_specs(toy_args(), NAMES, SIZES, DATA_PARALLEL)[6:]


def test_compiled_baselines_match_jit_and_emit_their_collectives():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(SIZES), NAMES, axis_types=(AxisType.Auto,) * 2)
    optimizer = optax.adam(1e-3)
    step = make_train_step(optimizer)
    args = concrete_mlp_args(16, 32, layers=2, optimizer=optimizer)
    want = jax.jit(step)(*args)
    kinds = {}
    for strategy in (DATA_PARALLEL, FSDP):
        compiled = compile_with_specs(step, args, mesh, baseline_specs(args, NAMES, SIZES, strategy))
        assert compiled.input_shardings[0][2][0].spec == jax.sharding.PartitionSpec(BOTH)  # x split 8 ways
        assert_trees_close(compiled(*args), want)
        kinds[strategy] = {c.kind for c in collectives(compiled.as_text())}
    assert "all-reduce" in kinds[DATA_PARALLEL] and "all-gather" not in kinds[DATA_PARALLEL]
    assert "all-gather" in kinds[FSDP]  # weights gathered before use


def test_markdown_flags_a_model_that_loses():
    def row(strategy, t):
        ours = strategy == "shardsearch"
        return Row("m", "c", "2x4", strategy, total_s=t, compute_s=t, comm_s=0.0, memory_bytes=1024.0,
                   collectives="none", split="0/3", plan_s=1.0 if ours else None, predicted_s=t if ours else None)

    win = markdown([row("shardsearch", 1e-3), row(DATA_PARALLEL, 2e-3), row(FSDP, 3e-3)])
    lose = markdown([row("shardsearch", 2.5e-3), row(DATA_PARALLEL, 2e-3), row(FSDP, 3e-3)])
    assert "| 0.500 | 0.333 |" in win and "| yes |" in win
    assert "| 1.250 | 0.833 |" in lose and "**no**" in lose
