"""Pricing: graph + per-node strategies + cluster -> the numeric ``solve.Problem``.

This is the last stage that sees the graph; ``solve/`` after it sees only numbers.
"""

from .build import CostTables as CostTables
from .build import build_problem as build_problem
from .build import combined_all_reduces as combined_all_reduces
