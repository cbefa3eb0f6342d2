"""Per-operator sharding strategies: one rule module per operator family, and a registry."""

from shardsearch.strategies.base import OpView, Strategy
from shardsearch.strategies.registry import replicated_strategy, strategies_for
from shardsearch.strategies.specs import enumerate_specs

__all__ = ["OpView", "Strategy", "enumerate_specs", "replicated_strategy", "strategies_for"]
