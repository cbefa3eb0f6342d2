"""A pipelined step cut into programs, one per stage and kind of work (numpy only).

``stage_programs(graph, split, micro, assignment) -> StagePrograms`` turns a traced step,
its microbatch split (``pipeline.microbatch``), its per-microbatch program (``micro``)
and a ``StageAssignment`` into ``Program`` s, each a graph of its own
(``pipeline.subgraph.extract``) that the intra-op planner plans on the stage's submesh:

- PRE (once per step, before the loop): the stage's PRE nodes (and the ``pre_copies`` of
  its per-microbatch nodes), from the traced graph;
- FORWARD / BACKWARD (once per microbatch): the stage's nodes of the micro graph;
- POST (once per step, after the loop): the stage's POST nodes (its optimizer update),
  and a sum of partial results made on several stages that only POST work reads (a tied
  embedding's gradient: ``stages.assign_stages`` assigns it POST): it adds their running
  totals once per step, so each partial crosses stages once a step, not per microbatch.

A value kept on several stages (``StageAssignment.copies``: a tied embedding, its
optimizer state and its update) is made by each of them on its own copy: its keys carry
``part`` = the stage holding that copy, and the step's result is the copies put together
(one array over those stages' submeshes). Once-per-step work that reads another stage's
once-per-step results (the other stage's gradient partial, a global gradient norm) is
cut into ``wave`` s: a program of
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
from shardsearch.pipeline.layer_split import LayerSplit, layer_split, restrict
from shardsearch.pipeline.micro_graph import MicroGraph, OutKind
from shardsearch.pipeline.microbatch import MicrobatchSplit
from shardsearch.pipeline.states import Phase, Reduction
from shardsearch.pipeline.subgraph import extract

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
    part: int | None = None  # a split loop's value (layer-stacked or carried), or a copy: the stage holding it


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
    # the step's flat results; a layer-stacked one (its node in ``layers.layer_dims``) is
    # put together from its parts (``part`` = each stage of ``layers.ranges``)
    outputs: tuple[Key | LiteralValue, ...]
    arg_stage: tuple[int, ...]  # per flat argument: the stage it lives on between steps
    layers: LayerSplit | None = None  # a scan over layers split between stages
    copies: dict = dataclasses.field(default_factory=dict)  # node -> the stages holding a copy, owner first

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
        if node.kind is not NodeKind.OP or phase in (Phase.PRE, Phase.POST) or ref.node in self.split.pre_copies \
                or self.once_per_step(ref.node):
            return Key(ref, Form.WHOLE)
        if phase is Phase.ACCUM:
            return Key(ref, Form.ACC)
        if ref in self.split.batch_dims:
            return Key(ref, Form.STACK, self.split.batch_dims[ref])
        return Key(ref, Form.LAST)

    def once_per_step(self, n: int) -> bool:
        """A per-microbatch node assigned POST: a sum of partial results made on several
        stages (a tied embedding's gradient), run once per step on their running totals."""
        return self.split.phases[n] is Phase.ACCUM and self.a.node_kind[n] is StageKind.POST

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
                wave[n] = max([wave.get(n, 0)] + [wave[r.node] + self.crosses(r.node, n)
                                                  for r in self.graph.nodes[n].inputs
                                                  if isinstance(r, ValueRef) and r.node in inside])
            for r in self.graph.regions:
                if r.members[0] in inside:
                    top = max(wave[m] for m in r.members)
                    for m in r.members:
                        wave[m] = top
        return wave

    def crosses(self, src: int, dst: int) -> bool:
        """Whether some stage running ``dst`` reads ``src`` from another stage."""
        stage = self.a.node_stage
        if SPLIT in (stage[src], stage[dst]):
            return False
        return not set(self.stages_of(dst)) <= set(self.stages_of(src))

    def stages_of(self, node: int) -> list[int]:
        """The stages running ``node``: its own, the stages keeping copies of it, or every
        stage of a split loop's layers."""
        if node in self.a.copies:
            return list(self.a.copies[node])
        s = self.a.node_stage[node]
        return sorted(self.layers.ranges) if s == SPLIT else [s]

    def step_pieces(self, kind: StageKind, nodes: list[int]) -> list:
        wave = self.waves(nodes)
        groups: dict[tuple[int, int], list[int]] = {}
        for n in nodes:
            for s in self.stages_of(n):
                groups.setdefault((s, wave[n]), []).append(n)
        return [(s, kind, w, members) for (s, w), members in sorted(groups.items())]

    def micro_pieces(self) -> list:
        groups: dict[tuple[int, StageKind], list[int]] = {}
        for old, new in self.micro.node_map.items():
            kind = self.a.node_kind[old]
            if self.once_per_step(old):
                continue
            if kind not in MICRO_KINDS:
                raise ValueError(f"stage assignment: node {old} ({self.graph.nodes[old].primitive}) runs per "
                                 f"microbatch but is assigned {kind.value}")
            for s in self.stages_of(old):
                groups.setdefault((s, kind), []).append(new)
        return [(s, k, 0, members) for (s, k), members in sorted(groups.items(), key=lambda x: (x[0][0], x[0][1].value))]

    # ------------------------------------------------------------------ split loops
    def to_orig(self, micro: bool) -> callable:
        if not micro:
            return lambda n: n
        return lambda n: self.inv[n] if n in self.inv else (
            self.micro_in[n].value.node if n in self.micro_in else None)

    def parent(self, stage: int, micro: bool) -> tuple[OpGraph, dict]:
        """The graph stage ``stage``'s pieces are cut from (its layers of a split loop)."""
        base = self.micro.graph if micro else self.graph
        if self.layers is None or stage not in self.layers.ranges:
            return base, {}
        key = (stage, micro)
        if key not in self.restricted:
            self.restricted[key] = restrict(base, self.to_orig(micro), stage, self.layers, self.a)
        return self.restricted[key]

    def chain_end(self, orig: int) -> int:
        """The stage whose part of a split loop's value is the whole loop's result."""
        for li in self.layers.loops:
            if orig in self.graph.loops[li].members:
                return self.layers.order(self.graph.loops[li].reverse)[-1]
        raise ValueError(f"node {orig} of a split loop's layers is read whole by work outside the loop")

    def with_part(self, key, stage: int, split_reader: bool):
        copies = self.a.copies.get(key.ref.node) if isinstance(key, Key) else None
        if copies:  # the reader's own copy, or the owner's
            return dataclasses.replace(key, part=stage if stage in copies else copies[0])
        if not isinstance(key, Key) or self.a.node_stage[key.ref.node] != SPLIT:
            return key
        return dataclasses.replace(key, part=stage if split_reader else self.chain_end(key.ref.node))

    def check_order(self, stage: int, kind: StageKind, key: Key) -> None:
        old = key.ref.node
        t, tkind = self.a.node_stage[old], self.a.node_kind[old]
        ok = (tkind is StageKind.FORWARD and (kind is StageKind.BACKWARD or t <= stage)) or (
            tkind is StageKind.BACKWARD and kind is StageKind.BACKWARD and t >= stage)
        if not ok:
            raise ValueError(BAD_ORDER.format(reader=f"stage {stage} {kind.value} work", s=stage, kind=kind.value,
                                              value=f"{self.graph.nodes[old].primitive} #{old}", t=t,
                                              tkind=tkind.value))


def split_as_assigned(split: MicrobatchSplit, assignment: StageAssignment) -> MicrobatchSplit:
    """``split`` with the assignment's one exception to its phases: a sum of partial results
    from several stages that only once-per-step work reads runs once per step (POST), on
    the partials accumulated where they are made (see ``pipeline.assignment``)."""
    moved = [n for n, (p, k) in enumerate(zip(split.phases, assignment.node_kind))
             if p in (Phase.MICRO, Phase.ACCUM) and k is StageKind.POST]
    if not moved:
        return split
    phases = list(split.phases)
    for n in moved:
        phases[n] = Phase.POST
    return dataclasses.replace(split, phases=tuple(phases),
                               reductions={n: r for n, r in split.reductions.items() if n not in moved})


def stage_programs(graph: OpGraph, split: MicrobatchSplit, micro: MicroGraph,
                   assignment: StageAssignment) -> StagePrograms:
    """``split`` and ``micro`` as ``split_as_assigned`` / ``micro_graph`` make them for ``assignment``."""
    b = _Builder(graph, split, micro, assignment)
    b.layers, b.restricted = layer_split(graph, assignment), {}
    phases, stage_of = split.phases, assignment.node_stage
    pre = [n.id for n in graph.nodes
           if n.kind is not NodeKind.INPUT and (phases[n.id] is Phase.PRE or n.id in split.pre_copies)]
    post = [n.id for n in graph.nodes if phases[n.id] is Phase.POST or b.once_per_step(n.id)]
    pieces = b.step_pieces(StageKind.PRE, pre) + b.micro_pieces() + b.step_pieces(StageKind.POST, post)

    # what each piece reads, as keys
    reads = []
    for stage, kind, wave, members in pieces:
        micro_kind = kind in MICRO_KINDS
        parent, virtual = b.parent(stage, micro_kind)
        orig = b.to_orig(micro_kind)
        ext = _external(parent, members)
        split_readers = {r for n in members if stage_of[orig(n)] == SPLIT for r in parent.nodes[n].inputs
                         if isinstance(r, ValueRef)}
        keys = []
        for r in ext:
            if r in virtual:  # a split loop's carry, from the stage that ran the layers before
                value, src = virtual[r]
                keys.append(Key(value, Form.MICRO, part=src))
                continue
            key = b.micro_key(r) if micro_kind else b.step_key(r)
            keys.append(b.with_part(key, stage, r in split_readers))
        if micro_kind:
            for k in keys:
                if k.form is Form.MICRO and k.part is None:
                    b.check_order(stage, kind, k)
        reads.append((ext, keys))
    outputs = tuple(b.step_key(r) for r in graph.outputs)
    needed: set[Key] = set()
    for _, keys in reads:
        needed.update(keys)
    for k in outputs:
        if not isinstance(k, Key):
            continue
        if k.ref.node in assignment.copies:
            needed.update(dataclasses.replace(k, part=s) for s in assignment.copies[k.ref.node])  # put together
        elif stage_of[k.ref.node] == SPLIT and k.ref.node in b.layers.layer_dims:
            needed.update(dataclasses.replace(k, part=s) for s in b.layers.ranges)  # put together from parts
        else:
            needed.add(b.with_part(k, 0, False))
    for k in list(needed):  # what the runtime makes them from
        if k.form in (Form.STACK, Form.LAST):
            needed.add(Key(k.ref, Form.MICRO, part=k.part))
        elif k.form is Form.SLICE:
            needed.add(Key(k.ref, Form.WHOLE, part=k.part))

    programs = []
    for (stage, kind, wave, members), (ext, keys) in zip(pieces, reads):
        micro_kind = kind in MICRO_KINDS
        parent, _ = b.parent(stage, micro_kind)
        made, out_keys, reductions = [], [], []
        for n in sorted(members):
            orig_node = b.inv[n] if micro_kind else n
            part = stage if stage_of[orig_node] == SPLIT or orig_node in assignment.copies else None
            for k in range(len(parent.nodes[n].outputs)):
                orig = ValueRef(orig_node, k)
                cands = [(Key(orig, Form.MICRO if micro_kind else Form.WHOLE, part=part), None)]
                o = b.out_kind.get(orig) if micro_kind else None
                if o is not None and o.kind is OutKind.ACCUM:
                    cands.append((Key(orig, Form.ACC, part=part), o.reduction))
                elif micro_kind and orig_node in split.reductions:  # a partial a once-per-step sum reads
                    cands.append((Key(orig, Form.ACC, part=part), split.reductions[orig_node]))
                for key, red in cands:
                    if key in needed:
                        made.append(ValueRef(n, k))
                        out_keys.append(key)
                        reductions.append(red)
        programs.append(Program(stage, kind, wave, extract(parent, members, ext, made), tuple(keys),
                                tuple(out_keys), tuple(reductions)))
    arg_stage = tuple(assignment.owner(i) or 0 for i in range(len(graph.input_nodes)))
    outputs = tuple(k if not isinstance(k, Key) or k.ref.node in (b.layers.layer_dims if b.layers else {})
                    or k.ref.node in assignment.copies else b.with_part(k, 0, False) for k in outputs)
    return StagePrograms(assignment.num_stages, micro.num_microbatches, tuple(programs), outputs, arg_stage,
                         b.layers, dict(assignment.copies))
