"""The GPU-target table's arithmetic (benchmarks/gpu_target_report.py), on hand-made rows."""

from benchmarks.gpu_target_report import closure, compute_alone_s, hidden, markdown
from benchmarks.runner import Row


def row(strategy, overlap_ms, compute_ms, comm_ms, **kw):
    return Row(suite="gpt", config="gpt-x", cluster="h100-8", mesh="2x4", strategy=strategy,
               total_s=(compute_ms + comm_ms) / 1e3, compute_s=compute_ms / 1e3, comm_s=comm_ms / 1e3, comm_bytes=0.0,
               memory_bytes=2**30, fits=True, ideal_s=0.004, compile_s=1.0, target="gpu",
               overlap_s=overlap_ms / 1e3, exposed_comm_s=(overlap_ms - compute_ms) / 1e3, **kw)


def test_closure_is_the_share_of_the_best_hand_overhead_the_auto_plan_removes():
    group = [row("replicated", 80.0, 80.0, 0.0), row("data parallel", 12.0, 11.0, 2.0),
             row("FSDP (ZeRO-3)", 15.0, 10.5, 6.0), row("shardsearch", 11.0, 10.5, 1.0, predicted_s=0.0105)]
    ideal = compute_alone_s(group)
    assert ideal == 0.010  # 80 ms of kernels over 8 devices
    assert abs(closure(group[-1], group[1], ideal) - 0.5) < 1e-9  # 12 -> 11 of 12 -> 10
    assert abs(hidden(group[1]) - 0.5) < 1e-9  # 1 ms of 2 exposed
    text = markdown(group)
    assert "| gpt | gpt-x | h100-8 | 2x4 | 11.00 | data parallel | 12.00 | 0.917 | 10.00 | 4.00 | 50% |" in text
    assert "| shardsearch | 11.50 | 11.00 | 10.50 | 1.00 | 0.50 | 50% |" in text
