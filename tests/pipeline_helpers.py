"""Stage assignments for the runtime's tests: the search's own (pipeline.stages), with the
layer units dealt evenly to the stages instead of chosen by the stage search."""

from __future__ import annotations

import numpy as np

from shardsearch.pipeline.layers import layer_units


def assign_even(graph, split, num_stages: int, num_microbatches: int):
    """The search's own assignment (pipeline.stages.assign_stages) of layer units dealt
    evenly to ``num_stages`` stages."""
    from shardsearch.pipeline.stages import assign_stages

    units = layer_units(graph)
    bounds = np.linspace(0, len(units), num_stages + 1).round().astype(int)
    ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    return assign_stages(graph, split, units, ranges, num_microbatches)
