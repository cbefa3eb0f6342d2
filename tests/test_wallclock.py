"""The wall-clock column: real arrays from abstract args, timed runs, ratio to data parallel."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.baselines import Baseline
from benchmarks.report import markdown
from benchmarks.runner import run_config
from benchmarks.wallclock import concrete_args, median_step_s
from cost_model import Cluster


def test_concrete_args_match_the_abstract_ones():
    abstract = ({"w": jax.ShapeDtypeStruct((4, 3), jnp.bfloat16)}, jax.ShapeDtypeStruct((5,), jnp.int32))
    params, ids = concrete_args(abstract)
    assert params["w"].shape == (4, 3) and params["w"].dtype == jnp.bfloat16
    assert np.abs(params["w"].astype(np.float32)).max() > 0  # not all zeros: a real float input
    assert ids.dtype == np.int32 and not ids.any()  # zeros: a valid token id / label


def test_median_step_time_runs_the_compiled_program_on_its_shardings():
    calls = []
    f = jax.jit(lambda x: (calls.append(1), x * 2)[1])  # traced once: later calls reuse it
    compiled = f.lower(jax.ShapeDtypeStruct((8, 8), jnp.float32)).compile()
    t = median_step_s(compiled, (np.ones((8, 8), np.float32),), repeats=3)
    assert 0 < t < 5 and len(calls) == 1


def test_runner_reports_wall_time_as_ratio_to_data_parallel():
    rows = run_config("mlp", "mlp-tiny", Cluster.load("h100-8"), (2, 4), wallclock=True,
                      baselines=(Baseline.DATA_PARALLEL, Baseline.MEGATRON), say=lambda m: None)
    assert {r.strategy for r in rows} == {"shardsearch", "data parallel", "Megatron TP"}
    assert all(r.wall_s is not None and r.wall_s > 0 for r in rows)
    table = markdown(rows, "t")
    dp_line = next(line for line in table.splitlines() if line.startswith("| data parallel |"))
    assert dp_line.rstrip(" |").endswith("1.00")  # data parallel over itself
