"""What a benchmark model hands to the runner: a train step, abstract arguments, and
the logical axis names of every argument dimension (for hand-written baselines)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

# The logical axis vocabulary. Baselines map these names to mesh axes.
LOGICAL_AXES = (
    "batch",  # examples in the batch
    "seq",  # sequence positions
    "embed",  # model width (d_model / hidden)
    "heads",  # attention heads
    "head_dim",  # per-head width
    "mlp",  # feed-forward inner width
    "vocab",  # vocabulary
    "experts",  # mixture-of-experts experts
    "layers",  # stacked layers (scan)
    "conv_in",  # input channels of a conv kernel
    "conv_out",  # output channels of a conv kernel
    "height",
    "width",
    "classes",
)


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    train_step: Callable  # train_step(params, opt_state, batch) -> (params, opt_state, loss)
    args: tuple  # (params, opt_state, batch) as ShapeDtypeStruct pytrees: nothing allocated
    # pytree matching args; each leaf a tuple with one entry per dim: a LOGICAL_AXES
    # name or None (e.g. a step counter: ())
    logical_axes: tuple
    num_layers: int = 0
    params_count: int = 0
    config: Any = None
