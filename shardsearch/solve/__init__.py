"""The solver stage: a numeric Problem in, a Solution out. numpy and OR-Tools only, no jax."""

from .evaluate import CostBreakdown as CostBreakdown
from .evaluate import evaluate as evaluate
from .ilp import AboveCutoff as AboveCutoff
from .ilp import SolverTimeoutError as SolverTimeoutError
from .ilp import solve as solve
from .merge import Reduction as Reduction
from .merge import min_memory as min_memory
from .merge import reduce_problem as reduce_problem
from .problem import Problem as Problem
from .problem import ProblemError as ProblemError
from .problem import Solution as Solution

__all__ = [
    "Problem", "Solution", "ProblemError", "solve", "SolverTimeoutError", "AboveCutoff",
    "evaluate", "CostBreakdown", "reduce_problem", "Reduction", "min_memory",
]
