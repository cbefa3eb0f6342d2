"""StageAssignment: which pipeline stage runs each node of a step, and what crosses stages.

The contract between stage construction (``pipeline/stages.py``: ``assign_stages``) and
the pipeline runtime (``pipeline/runtime.py``). Plain data, numpy-free, no jax.

A pipelined step runs ``num_stages`` stages on disjoint submeshes. Stage ``s`` holds a
contiguous range of the forward pass's layer units (``unit_ranges[s]``, units from
``pipeline/layers.py``), the mirrored range of the backward pass, and the once-per-step
work of the parameters it owns. Every node of the graph gets

- ``node_stage[n]``: the stage that runs it, or ``SPLIT`` for the members of a scan over
  layers that several stages share (``loop_splits``), and the nodes outside such a loop
  that work on its layer-stacked values (stacked parameters' optimizer update, the stacked
  gradients): every stage runs those on its own layers, the slice ``[start, stop)`` of
  the dim ``layer_dims[n]`` of their outputs (the loop's iterations that stage holds);
- ``node_kind[n]``: when it runs (``StageKind``): ``PRE`` once per step before the
  microbatch loop, ``FORWARD`` / ``BACKWARD`` once per microbatch (the MICRO and ACCUM
  nodes of ``pipeline.microbatch``: forward if the loss depends on them, else backward),
  ``POST`` once per step after the loop (the optimizer update).

Values move between stages only as listed in ``transfers``: a value made on stage
``src`` and read on stage ``dst``, when (``kind``: a FORWARD transfer goes to a later stage,
a BACKWARD one to an earlier stage, both once per microbatch; PRE / POST once per step,
e.g. a tied embedding sent from its owner to the head's stage, and that stage's gradient
partial sent back to be summed at the owner) and its bytes (the whole value, before
sharding: per microbatch for FORWARD/BACKWARD, per step for PRE/POST). A value read by
several later stages is sent to each of them straight from ``src``.

Arguments: ``arg_stages[i]`` are the stages that read flat argument ``i``, its owner
first: the stage it lives on between steps (a parameter's optimizer update runs there).

A parameter read by several stages (a tied embedding) is kept on each of them, as
Megatron-LM does: ``copies[n]`` lists the stages (owner first) that hold a copy of node
``n`` and run it on their copy: the parameter and its optimizer state (INPUT nodes), and
the once-per-step work making their next values, from the sum of the stages' gradient
partials on. Each stage sums the same partials (its own and the others', sent once a step
after the loop: both ways at once) and runs the same update, so the copies stay equal;
the parameter itself never moves. A batch input is
fed to every stage in its ``arg_stages``, one microbatch at a time. A layer-stacked
argument of a split loop has ``arg_stages`` = every stage holding some of its layers,
and lives sliced on its layer dim 0 across them (``layer_dims`` of its INPUT node).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Mapping

from shardsearch.graph import ValueRef

SPLIT = -1  # node_stage of a node each stage of a split loop runs on its own layers


class StageKind(enum.Enum):
    PRE = "pre"  # once per step, before the microbatch loop
    FORWARD = "forward"  # once per microbatch, forward pass
    BACKWARD = "backward"  # once per microbatch, backward pass
    POST = "post"  # once per step, after the microbatch loop (optimizer update)


@dataclasses.dataclass(frozen=True)
class Transfer:
    """Value ``value`` made on stage ``src`` is read on stage ``dst``."""

    value: ValueRef
    src: int
    dst: int
    kind: StageKind  # when it moves (see the module notes)
    nbytes: int  # whole value: per microbatch (FORWARD/BACKWARD) or per step (PRE/POST)


@dataclasses.dataclass(frozen=True)
class LoopSplit:
    """A scan over layers (``graph.loops[loop]``) whose iterations several stages share."""

    loop: int  # index into graph.loops
    # per stage: [start, stop) of the stacked index (layer) it runs, whatever the scan's
    # direction (a reverse scan's first iteration is layer length - 1); empty when none
    iterations: tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class StageAssignment:
    num_stages: int
    node_stage: tuple[int, ...]  # per graph node: its stage, or SPLIT
    node_kind: tuple[StageKind, ...]  # per graph node
    unit_ranges: tuple[tuple[int, int], ...]  # per stage: [first, stop) of its layer units
    arg_stages: tuple[tuple[int, ...], ...]  # per flat argument: reading stages, owner first
    transfers: tuple[Transfer, ...] = ()
    loop_splits: tuple[LoopSplit, ...] = ()
    layer_dims: Mapping[int, int] = dataclasses.field(default_factory=dict)  # SPLIT node -> layer dim
    copies: Mapping[int, tuple[int, ...]] = dataclasses.field(default_factory=dict)  # node -> its stages, owner first

    def owner(self, arg: int) -> int | None:
        """The stage flat argument ``arg`` lives on between steps (None if no stage reads it)."""
        stages = self.arg_stages[arg]
        return stages[0] if stages else None

    def arg_copies(self, arg: int, input_node: int) -> tuple[int, ...]:
        """The stages holding a copy of flat argument ``arg`` (INPUT node ``input_node``), owner first."""
        return self.copies.get(input_node) or tuple(self.arg_stages[arg][:1])

    def nodes_of(self, stage: int, kind: StageKind) -> tuple[int, ...]:
        """Nodes stage ``stage`` runs as ``kind`` (SPLIT nodes included: every stage runs them)."""
        return tuple(n for n, (s, k) in enumerate(zip(self.node_stage, self.node_kind))
                     if k is kind and (s == stage or s == SPLIT or stage in self.copies.get(n, ())))

    def boundary_bytes(self) -> tuple[tuple[int, int], ...]:
        """Per boundary between stages s and s + 1: (forward, backward) bytes per microbatch
        that cross it (a value skipping stages crosses each boundary between them)."""
        out = [[0, 0] for _ in range(max(self.num_stages - 1, 0))]
        for t in self.transfers:
            if t.kind not in (StageKind.FORWARD, StageKind.BACKWARD):
                continue
            for b in range(min(t.src, t.dst), max(t.src, t.dst)):
                out[b][t.kind is StageKind.BACKWARD] += t.nbytes
        return tuple((f, b) for f, b in out)

    def step_bytes(self) -> int:
        """Bytes moved between stages once per step (PRE and POST transfers)."""
        return sum(t.nbytes for t in self.transfers if t.kind in (StageKind.PRE, StageKind.POST))
