"""Find the collectives in optimized HLO text (the benchmarks judge and plan.fidelity use it).

Handles tuple-shaped results (XLA's combiner merges many all-reduces into one)
and async pairs (``all-gather-start`` / ``-done``: the start is counted, the done
is not). Replica groups are kept as the raw text XLA printed.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from shardsearch.hlo.module import ARRAY_TYPE, DTYPE_BYTES

_KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# "%name = <result type> <op>(" where the op is a collective, optionally "-start"
_LINE = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<type>.+?)\s+(?P<op>"
    + "|".join(_KINDS)
    + r")(?P<start>-start)?\((?P<rest>.*)$"
)
_GROUPS = re.compile(
    r"(?:replica_groups|source_target_pairs)=("
    r"mesh\[[^\]]*\](?:,\s*device_ids=\((?:[^()]|\([^()]*\))*\))?\s*\{[^}]*\}"  # mesh['a'=2,...] {'a'}
    r"|\{\{.*?\}\}|\{\}"  # explicit lists
    r"|\[[\d,]*\]<=\[[\d,]*\](?:T\([\d,]*\))?"  # iota
    r")"
)
_IOTA = re.compile(r"\[([\d,]*)\]<=\[([\d,]*)\](?:T\(([\d,]*)\))?")
_MESH = re.compile(r"mesh\[([^\]]*)\](?:,\s*device_ids=\(((?:[^()]|\([^()]*\))*)\))?\s*\{([^}]*)\}")


@dataclasses.dataclass(frozen=True)
class HloCollective:
    kind: str  # one of _KINDS
    name: str
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, dims) of each result array
    replica_groups: str

    @property
    def nbytes(self) -> int:
        return sum(DTYPE_BYTES.get(dt, 4) * math.prod(dims) for dt, dims in self.shapes)

    def groups(self, num_devices: int) -> list[list[int]]:
        return device_groups(self.replica_groups, num_devices)

    def crosses_nodes(self, num_devices: int, devices_per_node: int) -> bool:
        return any(len({d // devices_per_node for d in g}) > 1 for g in self.groups(num_devices))

    @property
    def is_scalar(self) -> bool:
        """Every result array has at most one element (a loss, a step count)."""
        return all(math.prod(dims) <= 1 for _, dims in self.shapes)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _iota(dims: list[int], perm: list[int] | None) -> np.ndarray:
    ids = np.arange(int(np.prod(dims))).reshape(dims)
    return ids.transpose(perm) if perm else ids


_AXIS_REF = re.compile(r"\s*'?([^':]+)'?(?::\((\d+)\)(\d+))?\s*")


def _axis_ref(text: str) -> tuple[str, tuple[int, int] | None]:
    """``'x'`` -> ('x', None); ``'x':(2)4`` -> ('x', (2, 4)): pre-size 2, size 4."""
    name, pre, size = _AXIS_REF.fullmatch(text).groups()
    return name, (int(pre), int(size)) if pre else None


def device_groups(replica_groups: str, num_devices: int) -> list[list[int]]:
    """The device groups of a collective, from any syntax XLA prints.

    ``{{0,1},{2,3}}`` explicit; ``{}`` all devices; ``[2,4]<=[4,2]T(1,0)`` iota (an
    iota over [4,2], transposed, reshaped to 2 groups of 4); ``mesh['x'=2,'y'=4] {'y'}``
    groups along the named axes, optionally over ``device_ids=(<iota>)``; an axis may be
    named in part, ``{'y':(2)2}``: the size-2 piece of y below a more-major piece of size 2.
    """
    text = replica_groups.strip()
    if text in ("", "{}"):
        return [list(range(num_devices))]
    if text.startswith("{"):
        return [_ints(g) for g in re.findall(r"\{([\d,\s]*)\}", text[1:-1])]
    if text.startswith("["):
        m = _IOTA.fullmatch(text)
        shape, dims = _ints(m.group(1)), _ints(m.group(2))
        perm = _ints(m.group(3)) if m.group(3) else None
        return _iota(dims, perm).reshape(shape).tolist()
    m = _MESH.fullmatch(text)
    axes = [(a.strip().strip("'"), int(n)) for a, n in (part.split("=") for part in m.group(1).split(","))]
    names, sizes = [a for a, _ in axes], [n for _, n in axes]
    if m.group(2):
        im = _IOTA.fullmatch("[0]<=" + m.group(2).strip()) if not m.group(2).startswith("[0]") else None
        ids = _iota(_ints(im.group(2)), _ints(im.group(3)) if im.group(3) else None).reshape(sizes)
    else:
        ids = np.arange(int(np.prod(sizes))).reshape(sizes)
    # Grouped axes: 'x' (the whole axis) or 'x':(k)m, the sub-axis of size m whose
    # more-major part has size k. Each axis is cut into factors at every such bound.
    refs = [_axis_ref(part) for part in m.group(3).split(",") if part.strip()]
    factors = []  # (axis, pre-size, size), major to minor
    for name, n in zip(names, sizes):
        cuts = {1, n} | {c for a, sub in refs if a == name and sub for c in (sub[0], sub[0] * sub[1])}
        cuts = sorted(cuts)
        factors += [(name, lo, hi // lo) for lo, hi in zip(cuts, cuts[1:])] or [(name, 1, 1)]
    ids = ids.reshape([f[2] for f in factors])
    grouped = [i for i, (name, pre, size) in enumerate(factors)
               if any(a == name and (sub is None or sub[0] <= pre < sub[0] * sub[1]) for a, sub in refs)]
    rest = [i for i in range(len(factors)) if i not in grouped]
    size = int(np.prod([factors[i][2] for i in grouped])) if grouped else 1
    return ids.transpose(rest + grouped).reshape(-1, size).tolist()


def _result_arrays(type_text: str, is_async: bool) -> tuple[tuple[str, tuple[int, ...]], ...]:
    arrays = [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in ARRAY_TYPE.findall(type_text)]
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
                # all-reduce-start returns just its results; other async starts return
                # (operands..., results...)
                shapes=_result_arrays(m.group("type"), bool(m.group("start")) and m.group("op") != "all-reduce"),
                replica_groups=groups.group(1) if groups else "",
            )
        )
    return found
