"""``plan.pipeline``: microbatches, stages and schedule of a plan, as plain data (no jax).

``PipelinePlan`` is None on a plan that runs the step whole. Otherwise:

- ``num_microbatches`` M, ``batch_size`` B and ``batch_args`` (the flat arguments split
  into microbatches on dim 0, see ``pipeline.microbatch``);
- ``stages``: one ``StagePlan`` per stage, in pipeline order: the global ``devices`` of
  its submesh (mesh order) and the submesh ``shape``, its ``layers`` (``[first, stop)``
  of the forward pass's layer units, ``pipeline.layers``), and what the cost model
  predicts for it: ``micro_s`` (forward + backward of one microbatch), ``step_s`` (its
  once-per-step work: the optimizer update of the parameters it owns) and
  ``peak_bytes`` per device; ``programs``: for a multi-stage plan, the intra-op plan of
  each of the stage's programs by kind (``"forward"``, ``"backward"``, ``"pre"``,
  ``"post"``: ``shardsearch.Plan`` objects over that program's graph);
- ``schedule``: the order stages run microbatches in (``stage_search.Schedule``), None with one stage
  (gradient accumulation: the M microbatches run in one scan, one program);
- ``bubble``: the predicted fraction of the step a stage idles, ``transfers``: per
  boundary between consecutive stages, bytes sent per microbatch forward and backward;
- ``assignment``: the ``StageAssignment`` (stage and kind of every node of the traced
  step, split loops, layer dims) the stages' programs were cut by, so that ``plan.apply``
  rebuilds them; ``input_nodes``: the traced step's node of each flat argument.

``pipeline_to_dict`` / ``pipeline_from_dict`` write and read it in plan files
(``shardsearch.apply.plan_io``); ``describe`` says it in words for ``plan.summary()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from shardsearch.graph import ValueRef
from shardsearch.pipeline.assignment import LoopSplit, StageAssignment, StageKind, Transfer
from shardsearch.pipeline.stage_search import Schedule


@dataclasses.dataclass(frozen=True)
class StagePlan:
    devices: tuple[int, ...]
    shape: tuple[int, ...]
    layers: tuple[int, int] = (0, 0)
    micro_s: float = 0.0
    step_s: float = 0.0
    peak_bytes: float = 0.0
    programs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # kind -> Plan


@dataclasses.dataclass(frozen=True)
class PipelinePlan:
    num_microbatches: int
    batch_size: int
    batch_args: tuple[int, ...]
    stages: tuple[StagePlan, ...]
    schedule: Schedule | None = None
    bubble: float = 0.0
    transfers: tuple[tuple[int, int], ...] = ()
    assignment: StageAssignment | None = None  # which stage runs each node (multi-stage plans)
    input_nodes: tuple[int, ...] = ()  # the traced graph's node of each flat argument

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def map_programs(self, fn: Callable) -> "PipelinePlan":
        """This pipeline with ``fn`` applied to every stage's program plan."""
        stages = tuple(dataclasses.replace(s, programs={k: fn(v) for k, v in s.programs.items()})
                       for s in self.stages)
        return dataclasses.replace(self, stages=stages)

    def describe(self) -> str:
        """One line in words, for ``plan.summary()``."""
        m, rows = self.num_microbatches, self.batch_size // max(self.num_microbatches, 1)
        if self.num_stages <= 1:
            return (f"gradient accumulation: {m} microbatches of {rows} rows run in one scan, "
                    f"gradients summed across them before one optimizer update")
        shapes = sorted({"x".join(map(str, s.shape)) for s in self.stages})
        return (f"pipeline parallel: {self.num_stages} stages on {' / '.join(shapes)} submeshes, "
                f"{m} microbatches of {rows} rows, {self.schedule.value.upper()} schedule, "
                f"predicted bubble {self.bubble:.0%}")


    def describe_copies(self, in_paths) -> list[str]:
        """Per parameter kept on several stages (``StageAssignment.copies``), a line in words."""
        a = self.assignment
        if a is None or not a.copies or not self.input_nodes:
            return []
        out = []
        for i, n in enumerate(self.input_nodes):
            stages = a.copies.get(n)
            if stages and i < len(in_paths):
                ss = sorted(stages)
                on = ", ".join(map(str, ss[:-1])) + f" and {ss[-1]}"
                out.append(f"{in_paths[i]} kept on stages {on} (read by each; their gradient partials "
                           f"exchanged once a step, the same update run on each copy)")
        return out


def pipeline_to_dict(p: PipelinePlan | None, plan_to_dict: Callable) -> dict | None:
    if p is None:
        return None
    d = dataclasses.asdict(dataclasses.replace(p, stages=(), assignment=None))
    a = p.assignment
    d["input_nodes"] = list(p.input_nodes)
    d["assignment"] = None if a is None else {
        "num_stages": a.num_stages, "node_stage": list(a.node_stage), "node_kind": [k.value for k in a.node_kind],
        "unit_ranges": [list(r) for r in a.unit_ranges], "arg_stages": [list(s) for s in a.arg_stages],
        "loop_splits": [{"loop": ls.loop, "iterations": [list(r) for r in ls.iterations]} for ls in a.loop_splits],
        "layer_dims": [[n, d] for n, d in sorted(a.layer_dims.items())],
        "copies": [[n, list(s)] for n, s in sorted(a.copies.items())],
        "transfers": [[t.value.node, t.value.index, t.src, t.dst, t.kind.value, t.nbytes] for t in a.transfers]}
    d["schedule"] = p.schedule.value if p.schedule else None
    d["transfers"] = [list(t) for t in p.transfers]
    d["batch_args"] = list(p.batch_args)
    d["stages"] = [{**dataclasses.asdict(dataclasses.replace(s, programs={})),
                    "devices": list(s.devices), "shape": list(s.shape), "layers": list(s.layers),
                    "programs": {k: plan_to_dict(v) for k, v in s.programs.items()}} for s in p.stages]
    return d


def pipeline_from_dict(d: dict | None, plan_from_dict: Callable) -> PipelinePlan | None:
    """The PipelinePlan of a plan file; raises ValueError / KeyError / TypeError if malformed."""
    if d is None:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("stages"), list) or not d["stages"]:
        raise ValueError("'pipeline' must be an object with a non-empty 'stages' list")
    ints = lambda xs: tuple(int(x) for x in xs)  # noqa: E731
    stages = tuple(StagePlan(ints(s["devices"]), ints(s["shape"]), ints(s["layers"]), float(s["micro_s"]),
                             float(s["step_s"]), float(s["peak_bytes"]),
                             {str(k): plan_from_dict(v) for k, v in s.get("programs", {}).items()})
                   for s in d["stages"])
    m = int(d["num_microbatches"])
    if m < 1:
        raise ValueError(f"num_microbatches must be >= 1, got {m}")
    a = d.get("assignment")
    assignment = None if a is None else StageAssignment(
        int(a["num_stages"]), ints(a["node_stage"]), tuple(StageKind(k) for k in a["node_kind"]),
        tuple(ints(r) for r in a["unit_ranges"]), tuple(ints(s) for s in a["arg_stages"]),
        transfers=tuple(Transfer(ValueRef(int(t[0]), int(t[1])), int(t[2]), int(t[3]), StageKind(t[4]), int(t[5]))
                        for t in a.get("transfers", ())),
        loop_splits=tuple(LoopSplit(int(ls["loop"]), tuple(ints(r) for r in ls["iterations"]))
                          for ls in a.get("loop_splits", ())),
        layer_dims={int(n): int(k) for n, k in a.get("layer_dims", ())},
        copies={int(n): ints(s) for n, s in a.get("copies", ())})
    return PipelinePlan(m, int(d["batch_size"]), ints(d["batch_args"]), stages,
                        Schedule(d["schedule"]) if d.get("schedule") else None, float(d.get("bubble", 0.0)),
                        tuple(ints(t) for t in d.get("transfers", ())), assignment, ints(d.get("input_nodes", ())))
