"""Find the collectives in optimized HLO text.

Handles tuple-shaped results (XLA's combiner merges many all-reduces into one)
and async pairs (``all-gather-start`` / ``-done``: the start is counted, the done
is not). Replica groups are kept as the raw text XLA printed.
"""

from __future__ import annotations

import dataclasses
import math
import re

_KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
    "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
    "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1,
}
# "%name = <result type> <op>(" where the op is a collective, optionally "-start"
_LINE = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<type>.+?)\s+(?P<op>"
    + "|".join(_KINDS)
    + r")(?P<start>-start)?\((?P<rest>.*)$"
)
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+(?:fn)?)?)\[([\d,]*)\]")
_GROUPS = re.compile(r"replica_groups=(\{\{.*?\}\}|\{\}|\[[^\s,]*\]<=\[[^\]]*\](?:T\([\d,]*\))?|mesh\[[^\]]*\]\s*\{[^}]*\})")


@dataclasses.dataclass(frozen=True)
class HloCollective:
    kind: str  # one of _KINDS
    name: str
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, dims) of each result array
    replica_groups: str

    @property
    def nbytes(self) -> int:
        return sum(_DTYPE_BYTES.get(dt, 4) * math.prod(dims) for dt, dims in self.shapes)

    @property
    def is_scalar(self) -> bool:
        """Every result array has at most one element (a loss, a step count)."""
        return all(math.prod(dims) <= 1 for _, dims in self.shapes)


def _result_arrays(type_text: str, is_async: bool) -> tuple[tuple[str, tuple[int, ...]], ...]:
    arrays = [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in _ARRAY.findall(type_text)]
    if is_async and len(arrays) >= 2:
        # An async start returns (operands..., results...[, context]): keep the result half.
        arrays = [a for a in arrays if a[0] != "u32" or a[1]]
        arrays = arrays[len(arrays) // 2 :]
    return tuple(arrays)


def parse_collectives(hlo_text: str) -> list[HloCollective]:
    found = []
    for line in hlo_text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        groups = _GROUPS.search(m.group("rest"))
        found.append(
            HloCollective(
                kind=m.group("op"),
                name=m.group("name"),
                shapes=_result_arrays(m.group("type"), bool(m.group("start"))),
                replica_groups=groups.group(1) if groups else "",
            )
        )
    return found
