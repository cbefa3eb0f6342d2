"""Judge a program compiled for a GPU target (deviceless, ``shardsearch.target``).

The CPU judge (``price.judge``) prices one roofline over the whole program from XLA's
cost analysis and adds every collective: nothing overlaps. A GPU compile has no cost
analysis without a device, and its collectives run asynchronously, so here:

* compute: each kernel its own roofline (``kernels``), summed; loop bodies per iteration;
* communication: each collective as the CPU judge prices it, every time it runs;
* ``total_s`` = compute + communication (no overlap, comparable with the CPU rows);
* ``overlap_s``: the scheduled program replayed on two clocks (``replay``);
* ``exposed_comm_s`` = ``overlap_s`` - compute: what overlap left of the communication;
* ``xla_estimate_s``: XLA's latency-hiding scheduler's own figure (``lhs``), when the
  program was compiled through ``lhs.compile_with_estimate``.
"""

from __future__ import annotations

from typing import Sequence

import jax

from benchmarks.judge.price import Judged, _default_num_devices, _memory, price_collective
from benchmarks.judge.replay import CONTENTION, replay
from cost_model.cluster import Cluster
from shardsearch.hlo import parse_collectives


def judge_gpu_text(hlo_text: str, cluster: Cluster, *, num_devices: int | None = None, memory_bytes: float = 0.0,
                   xla_estimate_s: float | None = None, contention: float = CONTENTION,
                   device_ids: Sequence[int] | None = None) -> Judged:
    found = parse_collectives(hlo_text)
    if num_devices is None:
        num_devices = len(device_ids) if device_ids is not None else _default_num_devices(hlo_text, found)
    priced = tuple(p for p in (price_collective(c, cluster, num_devices, device_ids) for c in found)
                   if p.group_size > 1)
    r = replay(hlo_text, cluster, num_devices, contention=contention, device_ids=device_ids)
    return Judged(
        compute_s=r.compute_s,
        comm_s=r.comm_s,
        memory_bytes=float(memory_bytes),
        flops=r.flops,
        bytes_accessed=r.bytes_accessed,
        num_devices=num_devices,
        collectives=priced,
        matmul_flops=r.matmul_flops,
        bytes_s=r.bytes_accessed / cluster.hbm_bandwidth,
        overlap_s=r.total_s,
        exposed_comm_s=r.exposed_comm_s,
        xla_estimate_s=xla_estimate_s,
    )


def judge_gpu(compiled: jax.stages.Compiled, cluster: Cluster, *, num_devices: int | None = None,
              xla_estimate_s: float | None = None, device_ids: Sequence[int] | None = None) -> Judged:
    """Price a program compiled for ``cluster``'s GPUs (see the module doc). ``device_ids``:
    the cluster devices it runs on, in its device order (a pipeline stage's submesh)."""
    if device_ids is not None:
        num_devices = len(device_ids)
    if num_devices is None:
        counts = [getattr(s, "num_devices", 0) for s in jax.tree.leaves(compiled.input_shardings)]
        num_devices = max(counts, default=0) or None
    return judge_gpu_text(compiled.as_text(), cluster, num_devices=num_devices, memory_bytes=_memory(compiled),
                          xla_estimate_s=xla_estimate_s, device_ids=device_ids)
