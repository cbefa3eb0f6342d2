"""A pipelined step cut into programs, one per stage and kind of work (numpy only).

``stage_programs(graph, split, micro, assignment) -> StagePrograms`` turns a traced step,
its microbatch split (``pipeline.microbatch``), its per-microbatch program (``micro``)
and a ``StageAssignment`` into ``Program`` s, each a graph of its own
(``pipeline.subgraph.extract``) that the intra-op planner plans on the stage's submesh:

- PRE (once per step, before the loop): the stage's PRE nodes (and the ``pre_copies`` of
  its per-microbatch nodes), from the traced graph;
- FORWARD / BACKWARD (once per microbatch): the stage's nodes of the micro graph;
- POST (once per step, after the loop): the stage's POST nodes (its optimizer update).

Once-per-step work that reads another stage's once-per-step results (a tied embedding
sent to the head's stage, a global gradient norm) is cut into ``wave`` s: a program of
wave w reads other stages' results of waves < w only.

Programs read and make values named by ``Key`` (a value of the traced graph and its
``Form``): WHOLE (made once per step: an argument, PRE or POST work), MICRO (made per
microbatch), SLICE (one microbatch's block of a WHOLE value along ``dim``: the batch,
dropout's random bits), ACC (a partial result summed (or max-ed, ...) over the
microbatches: a per-microbatch program outputs its partial, the runtime combines it
with the running total; after the loop it is the whole result), STACK (a per-microbatch
value's M pieces put back together along ``dim``) and LAST (a value every microbatch
computes alike). The runtime (``pipeline.runtime``) makes SLICE, ACC, STACK and LAST
values itself and moves values between stages.
"""

from __future__ import annotations

import dataclasses
import enum

from shardsearch.graph import LiteralValue, NodeKind, OpGraph, ValueRef
from shardsearch.pipeline.assignment import SPLIT, StageAssignment, StageKind
from shardsearch.pipeline.micro_graph import MicroGraph, OutKind
from shardsearch.pipeline.microbatch import MicrobatchSplit
from shardsearch.pipeline.propagate import Phase, Reduction
from shardsearch.pipeline.subgraph import extract

SPLIT_LOOPS = ("the pipeline runtime does not yet run a scan over layers split between stages "
               "(assignment.loop_splits); cut stages between whole loops")
BAD_ORDER = ("stage assignment: {reader} (stage {s}, {kind}) reads {value} made by stage {t} ({tkind}) in the "
             "same microbatch; forward values must flow to the same or later stages, backward values to the "
             "same or earlier ones")
MICRO_KINDS = (StageKind.FORWARD, StageKind.BACKWARD)


class Form(enum.Enum):
    WHOLE = "whole"
    SLICE = "slice"
    MICRO = "micro"
    ACC = "acc"
    STACK = "stack"
    LAST = "last"


@dataclasses.dataclass(frozen=True)
class Key:
    ref: ValueRef  # a value of the traced graph
    form: Form
    dim: int | None = None  # SLICE / STACK: the batch dim


@dataclasses.dataclass(frozen=True)
class Program:
    stage: int
    kind: StageKind
    wave: int  # PRE / POST: runs after every program of a lower wave
    graph: OpGraph
    inputs: tuple[Key, ...]  # one per input node of ``graph``
    outputs: tuple[Key, ...]  # one per output of ``graph``
    reductions: tuple[Reduction | None, ...]  # per output: an ACC output's combination with the running total

    @property
    def per_microbatch(self) -> bool:
        return self.kind in MICRO_KINDS

    @property
    def key(self) -> str:
        """Its name among its stage's programs in ``StagePlan.programs``: ``forward``, ``pre.1``, ..."""
        return self.kind.value + (f".{self.wave}" if self.wave else "")

    @property
    def name(self) -> str:
        return f"stage {self.stage} {self.kind.value}" + (f" (wave {self.wave})" if self.wave else "")


@dataclasses.dataclass(frozen=True)
class StagePrograms:
    num_stages: int
    num_microbatches: int
    programs: tuple[Program, ...]
    outputs: tuple[Key | LiteralValue, ...]  # the step's flat results
    arg_stage: tuple[int, ...]  # per flat argument: the stage it lives on between steps

    def of(self, stage: int, kind: StageKind) -> tuple[Program, ...]:
        return tuple(p for p in self.programs if p.stage == stage and p.kind is kind)


def _region_reads(graph: OpGraph, members: set[int]) -> list:
    """Operands that regions wholly among ``members`` name besides their nodes' inputs."""
    out = []
    for r in graph.regions:
        if not all(m in members for m in r.members):
            continue
        for field in ("carry_out", "ys", "inputs", "outputs", "results", "index", "pred"):
            value = getattr(r, field, ())
            items = value if isinstance(value, tuple) else (value,)
            for x in items:
                out.extend(x if isinstance(x, tuple) else (x,))
    return out


def _external(graph: OpGraph, members: list[int]) -> list[ValueRef]:
    """Values ``members`` read that they do not make, in order of first use."""
    inside = set(members)
    seen: dict[ValueRef, None] = {}
    for n in sorted(members):
        for r in graph.nodes[n].inputs:
            if isinstance(r, ValueRef) and r.node not in inside:
                seen[r] = None
    for r in _region_reads(graph, inside):
        if isinstance(r, ValueRef) and r.node not in inside:
            seen[r] = None
    return list(seen)


class _Builder:
    def __init__(self, graph, split, micro, assignment):
        self.graph, self.split, self.micro, self.a = graph, split, micro, assignment
        self.inv = {v: k for k, v in micro.node_map.items()}
        self.micro_in = dict(zip(micro.graph.input_nodes, micro.inputs))
        self.out_kind = {o.value: o for o in micro.outputs}

    # ------------------------------------------------------------------ keys
    def step_key(self, ref) -> Key | LiteralValue:
        """How once-per-step work (or the step's result) sees a value of the traced graph."""
        if isinstance(ref, LiteralValue):
            return ref
        node = self.graph.nodes[ref.node]
        phase = self.split.phases[ref.node]
        if node.kind is not NodeKind.OP or phase in (Phase.PRE, Phase.POST) or ref.node in self.split.pre_copies:
            return Key(ref, Form.WHOLE)
        if phase is Phase.ACCUM:
            return Key(ref, Form.ACC)
        if ref in self.split.batch_dims:
            return Key(ref, Form.STACK, self.split.batch_dims[ref])
        return Key(ref, Form.LAST)

    def micro_key(self, mref: ValueRef) -> Key:
        """How per-microbatch work sees a value of the micro graph."""
        inp = self.micro_in.get(mref.node)
        if inp is not None:
            return Key(inp.value, Form.WHOLE) if inp.dim is None else Key(inp.value, Form.SLICE, inp.dim)
        return Key(ValueRef(self.inv[mref.node], mref.index), Form.MICRO)

    # ------------------------------------------------------------------ pieces
    def waves(self, nodes: list[int]) -> dict[int, int]:
        stage, inside, wave = self.a.node_stage, set(nodes), {}
        for _ in range(2):  # a region's members share the wave of its latest member
            for n in sorted(nodes):
                wave[n] = max([wave.get(n, 0)] + [wave[r.node] + (stage[r.node] != stage[n])
                                                  for r in self.graph.nodes[n].inputs
                                                  if isinstance(r, ValueRef) and r.node in inside])
            for r in self.graph.regions:
                if r.members[0] in inside:
                    top = max(wave[m] for m in r.members)
                    for m in r.members:
                        wave[m] = top
        return wave

    def step_pieces(self, kind: StageKind, nodes: list[int]) -> list:
        wave = self.waves(nodes)
        groups: dict[tuple[int, int], list[int]] = {}
        for n in nodes:
            groups.setdefault((self.a.node_stage[n], wave[n]), []).append(n)
        return [(s, kind, w, members) for (s, w), members in sorted(groups.items())]

    def micro_pieces(self) -> list:
        groups: dict[tuple[int, StageKind], list[int]] = {}
        for old, new in self.micro.node_map.items():
            kind = self.a.node_kind[old]
            if kind not in MICRO_KINDS:
                raise ValueError(f"stage assignment: node {old} ({self.graph.nodes[old].primitive}) runs per "
                                 f"microbatch but is assigned {kind.value}")
            groups.setdefault((self.a.node_stage[old], kind), []).append(new)
        return [(s, k, 0, members) for (s, k), members in sorted(groups.items(), key=lambda x: (x[0][0], x[0][1].value))]

    def check_order(self, stage: int, kind: StageKind, key: Key) -> None:
        old = key.ref.node
        t, tkind = self.a.node_stage[old], self.a.node_kind[old]
        ok = (tkind is StageKind.FORWARD and (kind is StageKind.BACKWARD or t <= stage)) or (
            tkind is StageKind.BACKWARD and kind is StageKind.BACKWARD and t >= stage)
        if not ok:
            raise ValueError(BAD_ORDER.format(reader=f"stage {stage} {kind.value} work", s=stage, kind=kind.value,
                                              value=f"{self.graph.nodes[old].primitive} #{old}", t=t,
                                              tkind=tkind.value))


def stage_programs(graph: OpGraph, split: MicrobatchSplit, micro: MicroGraph,
                   assignment: StageAssignment) -> StagePrograms:
    if assignment.loop_splits or SPLIT in assignment.node_stage:
        raise NotImplementedError(SPLIT_LOOPS)
    b = _Builder(graph, split, micro, assignment)
    phases = split.phases
    pre = [n.id for n in graph.nodes
           if n.kind is not NodeKind.INPUT and (phases[n.id] is Phase.PRE or n.id in split.pre_copies)]
    post = [n.id for n in graph.nodes if phases[n.id] is Phase.POST]
    pieces = b.step_pieces(StageKind.PRE, pre) + b.micro_pieces() + b.step_pieces(StageKind.POST, post)

    # what each piece reads, as keys
    reads = []
    for stage, kind, wave, members in pieces:
        parent = micro.graph if kind in MICRO_KINDS else graph
        ext = _external(parent, members)
        keys = [b.micro_key(r) if kind in MICRO_KINDS else b.step_key(r) for r in ext]
        if kind in MICRO_KINDS:
            for k in keys:
                if k.form is Form.MICRO:
                    b.check_order(stage, kind, k)
        reads.append((ext, keys))
    outputs = tuple(b.step_key(r) for r in graph.outputs)
    needed: set[Key] = set()
    for _, keys in reads:
        needed.update(keys)
    needed.update(k for k in outputs if isinstance(k, Key))
    for k in list(needed):  # what the runtime makes them from
        if k.form in (Form.STACK, Form.LAST):
            needed.add(Key(k.ref, Form.MICRO))
        elif k.form is Form.SLICE:
            needed.add(Key(k.ref, Form.WHOLE))

    programs = []
    for (stage, kind, wave, members), (ext, keys) in zip(pieces, reads):
        parent = micro.graph if kind in MICRO_KINDS else graph
        made, out_keys, reductions = [], [], []
        for n in sorted(members):
            for k in range(len(parent.nodes[n].outputs)):
                ref = ValueRef(n, k)
                if kind in MICRO_KINDS:
                    orig = ValueRef(b.inv[n], k)
                    cands = [(Key(orig, Form.MICRO), None)]
                    o = b.out_kind.get(orig)
                    if o is not None and o.kind is OutKind.ACCUM:
                        cands.append((Key(orig, Form.ACC), o.reduction))
                else:
                    cands = [(Key(ref, Form.WHOLE), None)]
                for key, red in cands:
                    if key in needed:
                        made.append(ref)
                        out_keys.append(key)
                        reductions.append(red)
        programs.append(Program(stage, kind, wave, extract(parent, members, ext, made), tuple(keys),
                                tuple(out_keys), tuple(reductions)))
    arg_stage = tuple(assignment.owner(i) or 0 for i in range(len(graph.input_nodes)))
    return StagePrograms(assignment.num_stages, micro.num_microbatches, tuple(programs), outputs, arg_stage)
