"""XLA's own estimate of a GPU step: what its latency-hiding scheduler thought it would take.

Compiled with ``xla_dump_to=DIR`` and ``xla_dump_latency_hiding_schedule=true``, XLA's GPU
compiler writes ``<module>.schedule.txt``: the module and, per scheduled computation,
every instruction's start and end on the scheduler's clock, with ``scheduler_statistics``
(``total_cycles``) and ``cycles_per_microsecond``. The entry computation's total is the
step as XLA's cost model (its own kernel and collective latency estimates, not ours)
schedules it; a loop's body is scheduled on its own, and the entry counts the loop
instruction as the scheduler's estimator prices it.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile

import jax

DUMP_OPTIONS = {"xla_dump_latency_hiding_schedule": True, "xla_gpu_dump_llvmir": False}
# Without a device XLA cannot autotune, and its Triton gemm emitter sometimes finds no tile
# for a small odd-shaped dot ("Couldn't find output tile sizes"): compile those with cuBLAS.
CUBLAS_GEMMS = {"xla_gpu_enable_triton_gemm": False}
_NO_TILE = "output tile sizes"
_BLOCK = re.compile(r"^computation_schedules \{", re.M)
_ENTRY_ID = re.compile(r"^\s*entry_computation_id:\s*(\d+)", re.M)
_COMP_ID = re.compile(r"^\s*computation_id:\s*(\d+)", re.M)
_TOTAL = re.compile(r"\btotal_cycles:\s*([\d.eE+-]+)")
_CYCLES_PER_US = re.compile(r"\bcycles_per_microsecond:\s*([\d.eE+-]+)")


def schedule_estimate_s(schedule_text: str) -> float | None:
    """Seconds of the entry computation's schedule in a ``.schedule.txt`` dump (None if absent)."""
    entry = _ENTRY_ID.search(schedule_text)
    starts = [m.start() for m in _BLOCK.finditer(schedule_text)]
    for a, b in zip(starts, starts[1:] + [len(schedule_text)]):
        block = schedule_text[a:b]
        comp = _COMP_ID.search(block)
        if entry is not None and comp is not None and comp.group(1) != entry.group(1):
            continue
        total, per_us = _TOTAL.search(block), _CYCLES_PER_US.search(block)
        if total is None:
            continue
        return float(total.group(1)) / (float(per_us.group(1)) if per_us else 1.0) * 1e-6
    return None


def compile_with_estimate(lowered: jax.stages.Lowered) -> tuple[jax.stages.Compiled, float | None]:
    """Compile for the lowered program's (GPU) target; also return XLA's scheduled estimate
    of one step in seconds (None when the compiler wrote no schedule, e.g. on CPU). A program
    whose Triton gemms XLA cannot tile without a device is compiled with cuBLAS gemms."""
    with tempfile.TemporaryDirectory(prefix="shardsearch-lhs-") as d:
        try:
            compiled = lowered.compile(compiler_options={"xla_dump_to": d, **DUMP_OPTIONS})
        except Exception as e:  # jax raises JaxRuntimeError (an XlaRuntimeError) for compiler failures
            if _NO_TILE not in str(e):
                raise
            compiled = lowered.compile(compiler_options={"xla_dump_to": d, **DUMP_OPTIONS, **CUBLAS_GEMMS})
        found = sorted(glob.glob(os.path.join(d, "*.schedule.txt")), key=os.path.getmtime)
        estimate = None
        if found:
            with open(found[-1]) as f:
                estimate = schedule_estimate_s(f.read())
    return compiled, estimate
