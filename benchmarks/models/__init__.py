"""Benchmark models: each suite module has `CONFIGS` (name -> frozen config),
`make_workload(config, optimizer=None)`, `init_params(config, key)` and
`make_batch(config, key)`. `get_workload("gpt", "gpt-1.3B")` builds one abstractly."""

from __future__ import annotations

from benchmarks.models import bert, gpt, mlp, moe, wresnet
from benchmarks.models.base import LOGICAL_AXES, Workload
from shardsearch.errors import ShardsearchError

SUITES = {"gpt": gpt, "bert": bert, "moe": moe, "wresnet": wresnet, "mlp": mlp}

__all__ = ["SUITES", "LOGICAL_AXES", "Workload", "get_workload", "get_config"]


def get_config(suite: str, config_name: str):
    if suite not in SUITES:
        raise ShardsearchError(
            f"unknown benchmark suite {suite!r}; valid suites: {', '.join(sorted(SUITES))}"
        )
    configs = SUITES[suite].CONFIGS
    if config_name not in configs:
        raise ShardsearchError(
            f"unknown config {config_name!r} for suite {suite!r}; "
            f"valid configs: {', '.join(configs)}"
        )
    return configs[config_name]


def get_workload(suite: str, config_name: str, optimizer=None) -> Workload:
    """The named config's Workload; nothing is allocated (args are ShapeDtypeStructs)."""
    config = get_config(suite, config_name)  # validates both names first
    return SUITES[suite].make_workload(config, optimizer)
