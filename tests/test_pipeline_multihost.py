"""A pipelined step on 2 processes x 4 CPU devices over loopback: stage 0 on process 0's
devices, stage 1 on process 1's; activations and cotangents cross by a shard_map +
ppermute program; 3 steps equal one process running plain jax.jit. With a tied embedding,
each process keeps a copy of the table, and both copies equal jax.jit's."""

import io
import sys
import textwrap

import jax
import numpy as np
import pytest

from shardsearch.runtime.launch import launch
from test_multihost import ROOT, _lines, _worker_env
from test_numerics import run_steps
from test_pipeline_runtime import embed_head_step

WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from shardsearch.runtime.distributed import agree_on_plan, initialize_from_env
    initialize_from_env()
    import jax
    import numpy as np
    from shardsearch.pipeline.stage_search import Schedule
    from shardsearch.trace import retrace
    from test_pipeline_runtime import embed_head_step, pipelined_plan

    fn, args = embed_head_step(tied=sys.argv[2] == "tied")
    plan = pipelined_plan(fn, args, 2, 4, Schedule(sys.argv[1]))
    graph, _ = retrace(fn, args)
    plan = agree_on_plan(plan, graph.in_tree, graph.out_tree)
    step = plan.apply(fn)
    params, opt_state, batch = args
    losses = []
    for _ in range(3):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss) if loss.is_fully_addressable else float("nan"))
    print("losses", *losses, flush=True)
    def local(x):  # this process's whole value: its own, or its copy of one kept on both stages
        if x.is_fully_addressable:
            return np.asarray(x)
        out = np.full(x.shape, np.nan, np.float32)
        for shard in x.addressable_shards:
            out[shard.index] = np.asarray(shard.data)
        return out

    held = [(i, float(local(x).sum())) for i, x in enumerate(jax.tree_util.tree_leaves(params))
            if x.is_fully_addressable or x.sharding.mesh.axis_names[0] == "shardsearch_stages"]
    print("sums", *[f"{{i}}:{{v!r}}" for i, v in held], flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("schedule,tied", [("gpipe", "untied"), ("1f1b", "tied")])
def test_two_processes_run_a_pipeline_like_jit(tmp_path, schedule, tied):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(ROOT / "tests")))
    out = io.StringIO()
    code = launch([sys.executable, str(script), schedule, tied], 2, local_devices=4, out=out, env=_worker_env(),
                  timeout_s=500)
    assert code == 0, out.getvalue()[-4000:]
    fn, args = embed_head_step(tied=tied == "tied")
    params, _, losses = run_steps(jax.jit(fn), *args)
    want = [float(np.asarray(x).sum()) for x in jax.tree_util.tree_leaves(params)]
    got_losses, sums = _lines(out.getvalue(), "losses"), _lines(out.getvalue(), "sums")
    # the loss is made on the last stage, process 1's devices
    np.testing.assert_allclose([float(v) for v in got_losses["1"]], losses, rtol=1e-4)
    held, copies = {}, 0
    for pid in "01":
        for item in sums[pid]:
            i, v = item.split(":")
            if int(i) in held:  # a copy on each process: both equal jax.jit's
                copies += 1
                np.testing.assert_allclose(float(v), want[int(i)], rtol=1e-4, atol=1e-5)
            held[int(i)] = float(v)
    assert sorted(held) == list(range(len(want)))  # each parameter is held by one of the processes (or both)
    assert copies == (1 if tied == "tied" else 0)  # the tied table
    np.testing.assert_allclose([held[i] for i in range(len(want))], want, rtol=1e-4, atol=1e-5)
