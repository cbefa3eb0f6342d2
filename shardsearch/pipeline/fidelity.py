"""``plan.fidelity(compiled)`` of a pipelined plan: every stage program's plan next to the
program XLA compiled for it (no jax: compiled programs are only asked for ``as_text()``
and ``memory_analysis()``).

``pipeline_fidelity(plan, compiled)``: ``compiled`` is ``step.lower(*args).compile()`` of
the pipelined step (``.stages[s].programs``: plan key -> compiled program). For each
stage, each program's ``Fidelity`` (collectives per kind and mesh axes of the stage's
submesh, communication bytes, peak memory per device, as for an unpipelined plan), and
the stage's peak: the largest of its programs', predicted and compiled. Per-stage time,
which needs a price for the compiled program, is the benchmark judge's
(``benchmarks.judge.pipeline``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from shardsearch.errors import PlanError
from shardsearch.fidelity import Fidelity, _fmt_bytes, _rel, fidelity

NOT_PIPELINED = ("plan.fidelity: this plan runs as a pipeline, but a {got} was passed; pass the compile() of its "
                 "pipelined lowering (step.lower(*args).compile()), which has .stages")
MISSING = ("plan.fidelity: stage {stage} of the plan has program(s) {missing} that the compiled pipeline "
           "lacks; pass the compile() of this plan's own lowering (step.lower(*args).compile())")


@dataclasses.dataclass(frozen=True)
class StageFidelity:
    stage: int
    devices: tuple[int, ...]  # mesh positions of the stage's submesh
    programs: Mapping[str, Fidelity]  # plan key ("forward", "backward", "pre", "post.1", ...) -> its report

    @property
    def predicted_peak_bytes(self) -> float:
        return max((f.predicted_peak_bytes for f in self.programs.values()), default=0.0)

    @property
    def compiled_peak_bytes(self) -> float:
        return max((f.compiled_peak_bytes for f in self.programs.values()), default=0.0)

    @property
    def memory_error(self) -> float:
        """Relative error of the stage's predicted peak (its largest program's) per device."""
        return _rel(self.predicted_peak_bytes, self.compiled_peak_bytes)

    @property
    def predicted_comm_bytes(self) -> float:
        return sum(f.predicted_comm_bytes for f in self.programs.values())

    @property
    def compiled_comm_bytes(self) -> float:
        return sum(f.compiled_comm_bytes for f in self.programs.values())


@dataclasses.dataclass(frozen=True)
class PipelineFidelity:
    """Predicted vs compiled per stage and program. ``str(report)`` is a table."""

    stages: tuple[StageFidelity, ...]

    @property
    def predicted_comm_bytes(self) -> float:
        """Every program once (per microbatch for a forward or backward)."""
        return sum(s.predicted_comm_bytes for s in self.stages)

    @property
    def compiled_comm_bytes(self) -> float:
        return sum(s.compiled_comm_bytes for s in self.stages)

    @property
    def comm_error(self) -> float:
        return _rel(self.predicted_comm_bytes, self.compiled_comm_bytes)

    @property
    def memory_error(self) -> float:
        """The stage whose predicted peak is furthest from its compiled one: that error."""
        return max((s.memory_error for s in self.stages), key=abs, default=0.0)

    def table(self) -> str:
        head = ("stage", "program", "predicted comm", "compiled comm", "predicted peak", "compiled peak", "error")
        body = []
        for s in self.stages:
            for key, f in s.programs.items():
                body.append((str(s.stage), key, _fmt_bytes(f.predicted_comm_bytes), _fmt_bytes(f.compiled_comm_bytes),
                             _fmt_bytes(f.predicted_peak_bytes), _fmt_bytes(f.compiled_peak_bytes),
                             f"{f.memory_error:+.1%}"))
            body.append((str(s.stage), "stage peak", _fmt_bytes(s.predicted_comm_bytes),
                         _fmt_bytes(s.compiled_comm_bytes), _fmt_bytes(s.predicted_peak_bytes),
                         _fmt_bytes(s.compiled_peak_bytes), f"{s.memory_error:+.1%}"))
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        line = lambda row: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        return "\n".join([line(head), "-" * len(line(head)), *map(line, body)])

    def __str__(self) -> str:
        return self.table()


def pipeline_fidelity(plan, compiled) -> PipelineFidelity:
    if not hasattr(compiled, "stages"):
        raise PlanError(NOT_PIPELINED.format(got=type(compiled).__name__))
    stages = []
    for s, (st_plan, st) in enumerate(zip(plan.pipeline.stages, compiled.stages)):
        missing = sorted(set(st_plan.programs) - set(st.programs))
        if missing:
            raise PlanError(MISSING.format(stage=s, missing=", ".join(missing)))
        programs = {k: fidelity(p, st.programs[k]) for k, p in st_plan.programs.items()}
        stages.append(StageFidelity(s, tuple(st_plan.devices), programs))
    return PipelineFidelity(tuple(stages))
