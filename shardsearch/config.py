"""Search options, as a frozen dataclass; ``auto(..., **options)`` fills it by name."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from shardsearch.errors import OptionError
from shardsearch.pins import Pins, normalize_pins

UNKNOWN_OPTION = (
    "unknown option {name}={value!r} passed to shardsearch. Valid options: {valid}. "
    "Check the spelling, or pass cluster/memory_budget/donate_argnums as keywords."
)


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
    verbose: bool = False  # print progress of each stage
    # argument layouts fixed by the user: {path or regex: PartitionSpec} (see shardsearch.pins)
    pins: Pins = ()
    cache: bool = True  # reuse plans from the on-disk plan cache (see shardsearch.cache)
    # price data parallel, FSDP and tensor parallel on the same problem (plan.alternatives());
    # three more solves of the problem's size: compare=False when only the plan matters
    compare: bool = True
    # run the step as this many microbatches, gradients accumulated in one scan (see
    # shardsearch.pipeline.program); 1: the whole batch at once
    num_microbatches: int = 1

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
        cfg = cls(**options)
        if cfg.time_limit_s <= 0:
            raise OptionError(f"time_limit_s={cfg.time_limit_s} must be > 0 seconds; try time_limit_s=30")
        if cfg.num_workers < 1:
            raise OptionError(f"num_workers={cfg.num_workers} must be >= 1")
        if not isinstance(cfg.num_microbatches, int) or cfg.num_microbatches < 1:
            raise OptionError(f"num_microbatches={cfg.num_microbatches!r} must be an int >= 1 (1: no microbatches)")
        return cfg
