"""Search options, as a frozen dataclass; ``auto(..., **options)`` fills it by name."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from shardsearch.errors import OptionError
from shardsearch.pins import Pins, normalize_pins
from shardsearch.pipeline.stage_search import Schedule

UNKNOWN_OPTION = (
    "unknown option {name}={value!r} passed to shardsearch. Valid options: {valid}. "
    "Check the spelling, or pass cluster/memory_budget/donate_argnums as keywords."
)


# jax.checkpoint policies the search can apply to a step's layers (shardsearch.remat),
# least recompute first
REMAT_POLICIES = ("dots_saveable", "dots_with_no_batch_dims_saveable", "nothing_saveable")


class Solver(enum.Enum):
    """Which OR-Tools solver runs the ILP (after exact reduction). All are deterministic."""

    HIGHS = "highs"  # MIP, single-threaded; fastest on our problems
    SCIP = "scip"  # MIP, single-threaded
    CPSAT = "cpsat"  # CP-SAT with num_workers interleaved workers


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The search's options; ``ss.auto(fn, ..., **options)`` and ``ss.plan`` fill it by name
    (``time_limit_s=60``, ``solver="scip"``, ``verbose=True``, ``cache=False``, ``compare=False``)."""

    time_limit_s: float = 30.0  # wall-clock limit of the whole search; the best plan found so far is used
    solver: Solver = Solver.HIGHS
    num_workers: int = 8  # CP-SAT workers (results stay deterministic)
    seed: int = 0
    constrain_intermediates: bool = True  # pin every planned intermediate layout
    follow_elementwise: bool = True  # merge cheap unary ops into their producer before the ILP
    tie_repeats: bool = True  # repeated layers share one strategy per operator (solve one layer)
    # when no sharding fits memory_budget: recompute layers' activations in the backward pass
    # (shardsearch.remat), then split the batch into microbatches (num_microbatches=1 only).
    # remat: True (the search may choose), False (never), or a policy name from
    # shardsearch.remat.POLICIES: every layer always recomputed with it
    remat: bool | str = True
    accumulate: bool = True
    verbose: bool = False  # print progress of each stage
    # argument layouts fixed by the user: {path or regex: PartitionSpec} (see shardsearch.pins)
    pins: Pins = ()
    cache: bool = True  # reuse plans from the on-disk plan cache (see shardsearch.cache)
    # price data parallel, FSDP and tensor parallel on the same problem (plan.alternatives());
    # three more solves of the problem's size: compare=False when only the plan matters
    compare: bool = True
    # run the step as this many microbatches, gradients accumulated in one scan (see
    # shardsearch.pipeline.program); 1: the whole batch at once. "auto" is 1 here, and
    # lets a pipeline choose its own M (a pinned M > 1 pins the pipeline's too)
    num_microbatches: int = 1
    # pipeline stages (shardsearch.pipeline.choose): "auto" (the default) where the cost
    # model says they pay, declining cheaply where none can; None never; an int pins the
    # number of stages
    pipeline: Any = "auto"
    schedule: Schedule = Schedule.ONE_F_ONE_B  # the pipeline's schedule (GPipe or 1F1B)
    # on a cluster with a GPU target, weight gradients may be reduce-scattered so their
    # updates run on the parameter's shard (strategies/dot.py); off by default until the
    # fit's memory row and the gathers' latency fixed point price those plans well
    sharded_updates: bool = False

    def __post_init__(self):
        # a dict or list of pairs becomes an ordered tuple, so configs stay hashable
        object.__setattr__(self, "pins", normalize_pins(self.pins))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "SearchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        for k, v in options.items():
            if k not in names:
                raise OptionError(UNKNOWN_OPTION.format(name=k, value=v, valid=", ".join(sorted(names))))
        if isinstance(options.get("solver"), str):
            try:
                options = {**options, "solver": Solver(options["solver"].lower())}
            except ValueError:
                valid = ", ".join(repr(v.value) for v in Solver)
                raise OptionError(f"solver={options['solver']!r} is not one of {valid}") from None
        if options.get("num_microbatches") == "auto":
            options = {**options, "num_microbatches": 1}
        if isinstance(options.get("schedule"), str):
            try:
                options = {**options, "schedule": Schedule(options["schedule"].lower())}
            except ValueError:
                valid = ", ".join(repr(v.value) for v in Schedule)
                raise OptionError(f"schedule={options['schedule']!r} is not one of {valid}") from None
        cfg = cls(**options)
        p = cfg.pipeline
        if not (p is None or p == "auto" or (isinstance(p, int) and not isinstance(p, bool) and p >= 1)):
            raise OptionError(f"pipeline={p!r} must be \"auto\", None (never pipeline) or a number of stages >= 1")
        if cfg.time_limit_s <= 0:
            raise OptionError(f"time_limit_s={cfg.time_limit_s} must be > 0 seconds; try time_limit_s=30")
        if not isinstance(cfg.remat, bool) and cfg.remat not in REMAT_POLICIES:
            raise OptionError(f"remat={cfg.remat!r} must be True (the search may recompute layers when memory "
                              f"binds), False, or one of {', '.join(map(repr, REMAT_POLICIES))}")
        if cfg.num_workers < 1:
            raise OptionError(f"num_workers={cfg.num_workers} must be >= 1")
        if not isinstance(cfg.num_microbatches, int) or cfg.num_microbatches < 1:
            raise OptionError(f"num_microbatches={cfg.num_microbatches!r} must be \"auto\" or an int >= 1 "
                              "(1: no microbatches)")
        return cfg
