"""Compile-check a row's plan on a fake mesh of its size, where this machine has the devices
(on CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before jax starts)."""

from __future__ import annotations

import dataclasses
import time

import jax

from shardsearch.advise.advice import Advice, Row
from shardsearch.advise.batch import BatchMode, scaled_args
from shardsearch.trace import abstract_args


@dataclasses.dataclass(frozen=True)
class Verified:
    devices: int
    mesh: str
    compiled: bool  # False: skipped (too few devices here), see ``reason``
    reason: str
    compile_s: float | None = None
    compiled_bytes: float | None = None  # XLA's memory_analysis, per device
    predicted_bytes: float | None = None

    def __str__(self) -> str:
        if not self.compiled:
            return f"verify {self.devices} devices, mesh {self.mesh}: skipped ({self.reason})"
        if self.compiled_bytes is None:
            return f"verify {self.devices} devices, mesh {self.mesh}: {self.reason} in {self.compile_s:.1f} s"
        return (f"verify {self.devices} devices, mesh {self.mesh}: compiled in {self.compile_s:.1f} s; "
                f"XLA puts {self.compiled_bytes / 1e9:.3g} GB per device, the plan predicted "
                f"{self.predicted_bytes / 1e9:.3g} GB")


def verify(advice: Advice, row: Row, fn, *args, **calling) -> Verified:
    """Lower and compile ``fn`` under ``row``'s plan (abstract arguments: nothing is
    allocated); ``args`` as passed to ``advise`` (one device's batch in weak scaling)."""
    have = len(jax.devices())
    if row.plan is None:
        return Verified(row.devices, row.mesh, False, f"the row is {row.status.value}: it has no plan")
    if have < row.devices:
        return Verified(row.devices, row.mesh, False,
                        f"this machine has {have} {jax.devices()[0].platform} device(s); on CPU set "
                        f"XLA_FLAGS=--xla_force_host_platform_device_count={row.devices} before jax starts")
    # static arguments (``calling``) stay as they are; the rest need not be allocated
    abstract = args if calling.get("static_argnums") or calling.get("static_argnames") else abstract_args(args)
    if advice.batch_mode is BatchMode.PER_DEVICE:
        abstract = scaled_args(abstract_args(args), advice.batch, row.batch // advice.batch.size)
    t0 = time.perf_counter()
    compiled = row.plan.apply(fn, **calling).lower(*abstract).compile()
    if row.stages > 1:  # the stages' programs, each compiled on its submesh
        return Verified(row.devices, row.mesh, True, f"compiled {len(compiled.stages)} stages",
                        time.perf_counter() - t0, None, row.peak_bytes)
    memory = compiled.memory_analysis()
    used = None if memory is None else float(memory.argument_size_in_bytes + memory.output_size_in_bytes
                                             + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    return Verified(row.devices, row.mesh, True, "compiled", time.perf_counter() - t0, used, row.peak_bytes)
