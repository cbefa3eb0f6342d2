"""The matmuls (``dot``, ``convolution``) of optimized HLO: FLOPs per device, dtype, trip count.

FLOPs follow XLA's own ``HloCostAnalysis``, so the matmul share never exceeds what
``cost_analysis()`` reports for the same program:
  * dot: 2 * prod(result dims) * prod(lhs contracting dims);
  * convolution: 2 * batch / batch_groups * output features * input features / feature_groups
    * prod over spatial dims of the (output, kernel) position pairs that land on a real
    input element (padding and base-dilation holes skipped; with neither, that product is
    prod(output spatial) * prod(kernel spatial)).
Matmuls are found at top level and inside every called computation (fusions: XLA CPU
wraps each dot and conv in a ``__ynn_fusion``; while bodies; conditional branches). On
GPU, cuBLAS custom-calls (``__cublas$gemm``, ``__cublas$lt$matmul``) count as dots, read from
their ``backend_config``, and cuDNN convolution custom-calls (``__cudnn$convForward``,
``...BackwardInput``, ``...BackwardFilter``, fused ones) as the forward convolution they
stand for: XLA prints the forward convolution's ``window`` and ``dim_labels`` on each, so
its input, kernel and output are the operands and result in the call's order.

dtype: the dtype the program computes the matmul in on an accelerator. XLA's CPU backend
runs bf16/f16 matmuls (and elementwise ops) in f32, bracketed by converts; so each value's
*intended* dtype is read through upcasting float converts (``convert(bf16 -> f32)`` is still
bf16), and a matmul's dtype is the widest intended dtype of its operands. A program that
upcasts deliberately before a matmul looks the same on CPU and is judged at the narrower dtype.

Loops: a ``while`` whose ``backend_config`` states ``known_trip_count`` runs its body's
matmuls that many times (``trips``); XLA's cost analysis counts a body once. Of a
conditional, the branch with the most matmul FLOPs counts, as cost analysis takes the max.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from shardsearch.hlo.module import DTYPE_BYTES, Computation, Instruction, entry_of, parse_module

MATMUL_OPCODES = ("dot", "convolution")
# HLO element type -> the numpy/jax name that Cluster.peak_flops_for takes
NUMPY_NAMES = {
    "pred": "bool", "s4": "int4", "s8": "int8", "s16": "int16", "s32": "int32", "s64": "int64",
    "u4": "uint4", "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64",
    "f8e4m3fn": "float8_e4m3fn", "f8e5m2": "float8_e5m2", "c64": "complex64", "c128": "complex128",
}
# ops that do no arithmetic of their own: left out when finding the non-matmul dtype
_NO_ARITHMETIC = frozenset((
    "parameter", "constant", "iota", "tuple", "get-tuple-element", "bitcast", "copy", "reshape",
    "transpose", "broadcast", "slice", "dynamic-slice", "dynamic-update-slice", "concatenate", "pad",
    "reverse", "gather", "scatter", "convert", "bitcast-convert", "fusion", "call", "while",
    "conditional", "custom-call", "after-all", "partition-id", "replica-id", "copy-start", "copy-done",
    "all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
    "all-reduce-start", "all-reduce-done", "all-gather-start", "all-gather-done",
    "collective-permute-start", "collective-permute-done", "async-start", "async-done", "async-update",
    "optimization-barrier", "rng-bit-generator", "rng-get-and-update-state",
) + MATMUL_OPCODES)
_TRIP_COUNT = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)"?')
_DIMS = re.compile(r"\b(lhs_batch_dims|lhs_contracting_dims|rhs_batch_dims|rhs_contracting_dims)=\{([\d,]*)\}")
_WINDOW = re.compile(r"\bwindow=\{([^}]*)\}")
_DIM_LABELS = re.compile(r"\bdim_labels=([0-9a-z]+)_([0-9a-z]+)->([0-9a-z]+)")
_GROUPS = re.compile(r"\b(feature_group_count|batch_group_count)=(\d+)")
_BRANCHES = ("branch_computations", "true_computation", "false_computation")
# GPU HLO: cuBLAS matmuls are custom-calls returning (result, workspace), dims in backend_config
_GEMM_TARGET = re.compile(r'custom_call_target="__cublas\$(?:lt\$)?(?:gemm|matmul)')
_GEMM_CONTRACTING = re.compile(r'"lhs_contracting_dimensions"\s*:\s*\[([^\]]*)\]')
_CUDNN_CONV = re.compile(r'custom_call_target="__cudnn\$conv(?:BiasActivation)?(Forward|BackwardInput|BackwardFilter)')


@dataclasses.dataclass(frozen=True)
class HloMatmul:
    kind: str  # "dot" or "convolution"
    name: str
    dtype: str  # numpy name of the dtype it computes in, e.g. "bfloat16"
    flops: float  # one execution, per device
    trips: int = 1  # executions per step: the product of the known trip counts of enclosing loops

    @property
    def total_flops(self) -> float:
        return self.flops * self.trips


@dataclasses.dataclass(frozen=True)
class HloCompute:
    matmuls: tuple[HloMatmul, ...]
    other_dtype: str | None  # numpy name of the float dtype most non-matmul arithmetic is meant in

    @property
    def matmul_flops(self) -> float:
        """Per device per step, loop trips included."""
        return sum(m.total_flops for m in self.matmuls)

    @property
    def uncounted_loop_flops(self) -> float:
        """Matmul FLOPs of loop iterations after the first, which cost analysis leaves out."""
        return sum(m.flops * (m.trips - 1) for m in self.matmuls)


def _is_float(hlo_dtype: str) -> bool:
    return hlo_dtype.startswith(("f", "bf"))


def _width(hlo_dtype: str) -> int:
    return DTYPE_BYTES.get(hlo_dtype, 4)


def _result_dtype(instr: Instruction) -> str | None:
    arrays = instr.arrays
    return None if instr.is_tuple or not arrays else arrays[0][0]


def _capped(intended: str | None, result: str | None) -> str | None:
    """A float value is never meant wider than it is stored."""
    if intended is None or result is None or not (_is_float(intended) and _is_float(result)):
        return result
    return intended if _width(intended) <= _width(result) else result


def _widest_float(dtypes) -> str | None:
    floats = [d for d in dtypes if d and _is_float(d)]
    return max(floats, key=_width) if floats else None


def intended_dtypes(module: dict[str, Computation]) -> dict[tuple[str, str], str | None]:
    """(computation, instruction) -> the dtype its value is meant in (see the module doc).

    A float value is meant in the widest dtype its float operands are meant in, capped at
    its own (so ``convert(bf16 -> f32)`` and f32 arithmetic on such values stay bf16); a
    fusion's value is its root's; a fused computation's parameters inherit their
    caller's operands (its first caller, when several share it)."""
    out: dict[tuple[str, str], str | None] = {}
    done: set[str] = set()

    def visit(comp: Computation, params: dict[int, str | None]) -> None:
        done.add(comp.name)
        for instr in comp.instructions:
            mine = [out.get((comp.name, o)) for o in instr.operands]
            for attr, callee in instr.calls:
                if callee in module and callee not in done:
                    inherit = (attr, instr.opcode) in (("calls", "fusion"), ("calls", "async-start"), ("to_apply", "call"))
                    visit(module[callee], dict(enumerate(mine)) if inherit else {})
            out[(comp.name, instr.name)] = _intended(instr, mine, params, out, module)

    entry = entry_of(module)
    if entry is not None:
        visit(entry, {})
    return out


def _intended(instr: Instruction, operands: list, params: dict, out: dict, module: dict) -> str | None:
    result = _result_dtype(instr)
    if result is None or not _is_float(result):
        return result
    if instr.opcode == "parameter":
        index = int(instr.operands[0]) if instr.operands and instr.operands[0].isdigit() else -1
        return _capped(params.get(index), result) or result
    if instr.opcode == "fusion":
        called = [c for a, c in instr.calls if a == "calls" and c in module]
        if called:
            return _capped(out.get((called[0], module[called[0]].root)), result) or result
    if instr.opcode in ("constant", "iota", "get-tuple-element"):
        return result
    return _capped(_widest_float(operands), result) or result


def _is_matmul(instr: Instruction) -> bool:
    return instr.opcode in MATMUL_OPCODES or (
        instr.opcode == "custom-call" and bool(_GEMM_TARGET.search(instr.attrs) or _CUDNN_CONV.search(instr.attrs)))


def dot_flops(instr: Instruction, lhs: tuple[int, ...]) -> float:
    """2 * result elements * contracted elements; a cuBLAS custom-call's result is its first array."""
    if instr.opcode == "custom-call":
        m = _GEMM_CONTRACTING.search(instr.attrs)
        contracting = [int(d.strip().strip('"')) for d in m.group(1).split(",") if d.strip()] if m else []
    else:
        dims = {k: [int(d) for d in v.split(",") if d] for k, v in _DIMS.findall(instr.attrs)}
        contracting = dims.get("lhs_contracting_dims", [])
    return 2.0 * math.prod(instr.arrays[0][1]) * math.prod(lhs[d] for d in contracting)


def _window(text: str, rank: int) -> list[dict[str, int]]:
    """One dict per spatial dim: size, stride, pad_lo, pad_hi, lhs_dilate, rhs_dilate."""
    dims = [dict(size=1, stride=1, pad_lo=0, pad_hi=0, lhs_dilate=1, rhs_dilate=1) for _ in range(rank)]
    for field in text.split():
        key, _, value = field.partition("=")
        for d, part in zip(dims, value.split("x")):
            if key == "pad":
                lo, hi = part.split("_")
                d["pad_lo"], d["pad_hi"] = int(lo), int(hi)
            elif key in d:
                d[key] = int(part)
    return dims


def _valid_positions(w: dict[str, int], kernel: int, out: int, inp: int) -> int:
    """(output, kernel) index pairs of one spatial dim that read a real input element."""
    k = np.arange(kernel)[:, None]
    o = np.arange(out)[None, :]
    undilated = o * w["stride"] - w["pad_lo"] + k * w["rhs_dilate"]
    index = undilated // w["lhs_dilate"]
    on_element = undilated % w["lhs_dilate"] == 0  # not a hole of the dilated input
    return int(np.count_nonzero(on_element & (index >= 0) & (index < inp)))


def conv_flops(instr: Instruction, lhs: tuple[int, ...], rhs: tuple[int, ...],
               result: tuple[int, ...] | None = None) -> float:
    """A convolution of input ``lhs`` and kernel ``rhs`` into ``result`` (default: the
    instruction's first result array)."""
    labels = _DIM_LABELS.search(instr.attrs)
    if labels is None:
        return 0.0
    lhs_l, rhs_l, out_l = labels.groups()
    result = instr.arrays[0][1] if result is None else result
    groups = {k: int(v) for k, v in _GROUPS.findall(instr.attrs)}
    spatial = sorted(c for c in out_l if c.isdigit())
    window = _WINDOW.search(instr.attrs)
    dims = _window(window.group(1) if window else "", len(spatial))
    positions = math.prod(
        _valid_positions(w, rhs[rhs_l.index(s)], result[out_l.index(s)], lhs[lhs_l.index(s)])
        for w, s in zip(dims, spatial))
    in_features = lhs[lhs_l.index("f")] // groups.get("feature_group_count", 1)
    batch = lhs[lhs_l.index("b")] // groups.get("batch_group_count", 1)
    return 2.0 * in_features * result[out_l.index("f")] * batch * positions


def _matmul(comp: Computation, instr: Instruction, dtypes: dict) -> HloMatmul | None:
    lhs, rhs = comp.operand_dims(instr, 0), comp.operand_dims(instr, 1)
    if lhs is None or rhs is None or not instr.arrays or (instr.is_tuple and instr.opcode != "custom-call"):
        return None
    cudnn = _CUDNN_CONV.search(instr.attrs) if instr.opcode == "custom-call" else None
    if cudnn:  # the forward convolution's input, kernel, output, in this call's roles
        out = instr.arrays[0][1]
        lhs, rhs, out = {"Forward": (lhs, rhs, out), "BackwardInput": (out, rhs, lhs),
                         "BackwardFilter": (lhs, out, rhs)}[cudnn.group(1)]
        flops = conv_flops(instr, lhs, rhs, out)
    else:
        flops = conv_flops(instr, lhs, rhs) if instr.opcode == "convolution" else dot_flops(instr, lhs)
    meant = [dtypes.get((comp.name, o)) for o in instr.operands[:2]]
    dtype = _widest_float(meant) or next((d for d in meant if d), None) or instr.arrays[0][0]
    kind = "convolution" if instr.opcode == "convolution" or cudnn else "dot"
    return HloMatmul(kind, instr.name, NUMPY_NAMES.get(dtype, dtype), flops)


def trip_count(instr: Instruction) -> int:
    """A while loop's trip count when XLA states it, else 1 (counted once, as cost analysis does)."""
    m = _TRIP_COUNT.search(instr.attrs)
    return int(m.group(1)) if m else 1


def _matmuls(module: dict[str, Computation], entry: Computation, dtypes: dict) -> list[HloMatmul]:
    memo: dict[str, list[HloMatmul]] = {}

    def walk(comp: Computation, stack: tuple[str, ...]) -> list[HloMatmul]:
        if comp.name in memo:
            return memo[comp.name]
        found: list[HloMatmul] = []
        for instr in comp.instructions:
            if _is_matmul(instr):
                found += [m for m in (_matmul(comp, instr, dtypes),) if m is not None]
            called = [(a, module[c]) for a, c in instr.calls if c in module and c not in stack]
            branches = [walk(c, stack + (c.name,)) for a, c in called if a in _BRANCHES]
            if branches:  # cost analysis counts the costliest branch
                found += max(branches, key=lambda ms: sum(m.total_flops for m in ms))
            for attr, callee in called:
                if attr not in _BRANCHES and attr != "condition":
                    trips = trip_count(instr) if attr == "body" else 1
                    inner = walk(callee, stack + (callee.name,))
                    found += [dataclasses.replace(m, trips=m.trips * trips) for m in inner]
        memo[comp.name] = found
        return found

    return walk(entry, (entry.name,))


def _dominant(module: dict[str, Computation], dtypes: dict) -> str | None:
    """The float dtype holding the most result elements of non-matmul arithmetic."""
    elements: dict[str, int] = {}
    for comp in module.values():
        for instr in comp.instructions:
            d = dtypes.get((comp.name, instr.name))
            if instr.opcode not in _NO_ARITHMETIC and d is not None and _is_float(d):
                elements[d] = elements.get(d, 0) + math.prod(instr.arrays[0][1])
    return max(sorted(elements), key=elements.__getitem__) if elements else None


def hlo_compute(hlo_text: str) -> HloCompute:
    """The matmuls of optimized HLO and the dtype of the rest of its arithmetic."""
    module = parse_module(hlo_text)
    entry = entry_of(module)
    if entry is None:
        return HloCompute((), None)
    dtypes = intended_dtypes(module)
    other = _dominant(module, dtypes)
    return HloCompute(tuple(_matmuls(module, entry, dtypes)), NUMPY_NAMES.get(other, other) if other else None)


def parse_matmuls(hlo_text: str) -> list[HloMatmul]:
    return list(hlo_compute(hlo_text).matmuls)
