"""``memory_budget`` as the user writes it: bytes, or a string with a unit or a percentage.

    8e9, "8GB" (10**9 bytes each), "7.5GiB" (2**30), "512 MiB", "80%" (of the cluster's
    device memory), "1.5TB"; None: the cluster's device memory.
"""

from __future__ import annotations

import math
import re

from shardsearch.errors import OptionError

UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z%]*)\s*$")

BAD_BUDGET = (
    "memory_budget={value!r} is not a memory size. Give bytes per device as a number "
    "(8e9), a string with a unit (\"8GB\", \"7.5GiB\", \"512MiB\") or a share of the "
    "cluster's device memory (\"80%\" of {memory}); None means all of it."
)


def _fmt(nbytes: float) -> str:
    return f"{nbytes / 2**30:.4g} GiB"


def parse_budget(value, device_memory: float) -> float:
    """Bytes per device for ``memory_budget`` (see the module notes); ``device_memory``:
    the cluster's memory per device, what None and percentages refer to."""
    if value is None:
        return float(device_memory)
    if isinstance(value, bool):
        raise OptionError(BAD_BUDGET.format(value=value, memory=_fmt(device_memory)))
    if isinstance(value, (int, float)):
        nbytes = float(value)
    elif isinstance(value, str) and (m := _BUDGET.match(value)):
        number, unit = float(m.group(1)), m.group(2).lower()
        if unit == "%":
            nbytes = number / 100.0 * device_memory
        elif unit in UNITS:
            nbytes = number * UNITS[unit]
        else:
            raise OptionError(BAD_BUDGET.format(value=value, memory=_fmt(device_memory)))
    else:
        raise OptionError(BAD_BUDGET.format(value=value, memory=_fmt(device_memory)))
    if not math.isfinite(nbytes) or nbytes <= 0:
        raise OptionError(BAD_BUDGET.format(value=value, memory=_fmt(device_memory)))
    return nbytes
