"""The plan next to the textbook recipes on the same model, cluster and cost model.

``plan.alternatives()`` answers "why this plan": what data parallelism, FSDP (ZeRO-3)
and tensor parallelism would cost, each priced by the same cost model on the same
problem. Each recipe fixes the layouts of the arguments (``baselines``); the solver
completes the rest of the program around them, as it would around ``pins``
(``complete``), so a recipe is priced at its best, never at a careless version of it.
numpy only, no jax.
"""

from shardsearch.compare.baselines import (
    DATA_PARALLEL, FSDP, RECIPES, TENSOR_PARALLEL, Alternative, argument_roles, recipe_layouts,
)
from shardsearch.compare.complete import compare, restrict

__all__ = [
    "Alternative", "DATA_PARALLEL", "FSDP", "RECIPES", "TENSOR_PARALLEL",
    "argument_roles", "compare", "recipe_layouts", "restrict",
]
