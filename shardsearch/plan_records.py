"""The plain records a Plan carries: what the cost model predicted, how the solver did,
the operators kept replicated for want of a rule, the dearest resharding edges.

Data only (``shardsearch.plan`` re-exports them); the plan file reader
(``apply.plan_io``) builds them without importing the plan.
"""

from __future__ import annotations

import dataclasses

from cost_model import Spec


@dataclasses.dataclass(frozen=True)
class Predicted:
    """What the cost model expects one step to cost on the target cluster (per device)."""

    compute_s: float  # operators, and collectives' and reshards' memory traffic (collective_memory_s)
    comm_s: float  # collectives inside operators + resharding between them, on the links
    total_s: float
    peak_bytes: float  # the step's peak per device (shardsearch.memory), no argument donated
    # The memory model's breakdown and the communication the plan pays for, per device
    # (0 / () in plan files that predate them). See shardsearch.memory.MemoryBreakdown.
    params_bytes: float = 0.0
    opt_state_bytes: float = 0.0
    inputs_bytes: float = 0.0
    outputs_bytes: float = 0.0
    activations_bytes: float = 0.0  # kept by the forward pass for the backward pass
    peak_donated_bytes: float = 0.0  # the peak when every carried argument is donated
    comm_bytes: float = 0.0
    collectives: tuple = ()  # (kind, mesh axes, count, bytes) per kind of collective and axes
    # The part of compute_s that collectives and resharding spend reading and writing the
    # device's memory: their buffers and XLA's layout copies around them (cost_model.reshard).
    collective_memory_s: float = 0.0
    # What strategy rules for the operators left replicated would save at most: the plan's
    # cost minus that of the plan found with those operators free to take any layout
    # (shardsearch.fallbacks); 0 when none moves data, or in plan files that predate it.
    fallback_saving_s: float = 0.0

    def __post_init__(self):  # plan files give lists
        object.__setattr__(self, "collectives", tuple(tuple(c) for c in self.collectives))


@dataclasses.dataclass(frozen=True)
class MemoryAtPeak:
    """What the predicted per-device peak is made of (shardsearch.memory.explain): the
    bytes of each kind live at the peak (they sum to ``peak_bytes``) and the largest
    buffers there, each with the plan choice that would cut it."""

    peak_bytes: float
    donated: bool  # with every carried argument (parameters, optimizer state) donated
    by_kind: tuple[tuple[str, float], ...]  # (kind, bytes) in shardsearch.memory.KINDS order
    top: tuple[tuple[str, str, float, str], ...]  # (kind, name, bytes, what would cut it), largest first

    def __post_init__(self):  # plan files give lists
        object.__setattr__(self, "by_kind", tuple((str(k), float(b)) for k, b in self.by_kind))
        object.__setattr__(self, "top", tuple((str(k), str(n), float(b), str(c)) for k, n, b, c in self.top))


@dataclasses.dataclass(frozen=True)
class SolveStats:
    """How the search went: the problem's size before and after reduction, the solver's
    status, objective and proven bound (seconds per step), and the time it took."""

    num_nodes: int  # nodes of the traced graph
    num_variables: int  # ILP variables after reduction
    num_constraints: int
    reduced_nodes: int  # ILP nodes after follow-merging and elimination
    solve_s: float
    status: str
    objective: float  # seconds
    bound: float  # seconds
    search_s: float = 0.0  # trace + strategies + costs + solve, end to end
    cached: bool = False  # read back from the plan cache (shardsearch.cache), not searched now
    # the MIP of the whole graph before any reduction (solve.highs.formulation_size); 0 in
    # plan files that predate it
    unreduced_variables: int = 0
    unreduced_constraints: int = 0


@dataclasses.dataclass(frozen=True)
class FallbackOp:
    """An operator with no strategy rule, kept replicated (correct, maybe wasteful).

    ``seconds``: what its replicated layout costs the plan per step (resharding on its
    edges, and the compute a split would save): at most what a rule would save;
    ``moved_bytes``: whole bytes of the tensors resharded on its edges (shardsearch.fallbacks).
    """

    node: int
    primitive: str
    shapes: tuple[tuple[int, ...], ...]  # of its outputs
    label: str
    seconds: float = 0.0  # 0 in plan files that predate the figure
    moved_bytes: float = 0.0
    in_shapes: tuple[tuple[int, ...], ...] = ()


@dataclasses.dataclass(frozen=True)
class ReshardEdge:
    """A tensor the plan moves between layouts on its way from ``src`` to ``dst``."""

    src: int  # producing node
    dst: int  # consuming node (an argument's node: a result returned in that argument's layout)
    src_name: str  # "dot_general #12", or an argument path
    dst_name: str
    shape: tuple[int, ...]
    from_spec: Spec
    to_spec: Spec
    seconds: float  # what the cost model charged for it per step
