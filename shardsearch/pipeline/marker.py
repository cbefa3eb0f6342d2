"""``stage_boundary(x)``: a manual pipeline cut a user may put in a model.

It returns ``x`` unchanged, tagged with ``jax.ad_checkpoint.checkpoint_name`` (an
identity primitive that survives tracing and differentiation); stage construction
(``pipeline/layers.py``) then cuts the forward pass right after every tagged value,
and nowhere else. Without markers the cuts come from the program's structure.
"""

from __future__ import annotations

import jax
from jax.ad_checkpoint import checkpoint_name

from shardsearch.pipeline.layers import MARKER


def stage_boundary(x):
    """Mark ``x`` (an array or a pytree of arrays) as a place to cut pipeline stages."""
    return jax.tree_util.tree_map(lambda v: checkpoint_name(v, MARKER), x)
