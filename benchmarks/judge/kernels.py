"""Each kernel of a GPU program, priced on its own: the compute clock of the replay.

A GPU runs the optimized HLO of its entry computation (and of loop bodies) as one
kernel per top-level instruction: a fusion (loop, input/reduction, Triton gemm), a
cuBLAS or cuDNN custom-call, a copy. Each is priced as the planner prices an operator:

    seconds = max(matmul_s + other_flops / peak_flops_for(dtype), bytes / hbm_bandwidth)
    matmul_s = sum over its dots and convolutions of flops / (peak_flops_for(dtype) * efficiency(flops))

FLOPs as XLA's cost analysis counts them (``shardsearch.hlo.compute``: dot and
convolution formulas, cuBLAS gemm and cuDNN convolution custom-calls included), plus one
per element of every other arithmetic instruction inside the kernel. Bytes are what the
kernel reads and writes in device memory: its operands and results, except that an
operand the kernel only slices is read as the slice, and a buffer a dynamic-update-slice
writes in place costs only the update (a scan's stacked outputs are not copied whole
every iteration). No launch overhead beyond the matmul efficiency curve's floor.
"""

from __future__ import annotations

import dataclasses
import math

from cost_model.cluster import Cluster
from cost_model.compute import compute_time
from shardsearch.hlo.compute import _NO_ARITHMETIC, NUMPY_NAMES, _is_matmul, _matmul
from shardsearch.hlo.module import DTYPE_BYTES, Computation, Instruction, _arrays

# Instructions that launch nothing: aliasing, tuples, constants folded into the program.
FREE = frozenset({
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id",
    "replica-id", "opt-barrier", "optimization-barrier", "add-dependency", "domain", "copy-start",
    "copy-done",
})
_SLICING = frozenset({"slice", "dynamic-slice", "gather"})


@dataclasses.dataclass(frozen=True)
class Kernel:
    name: str
    flops: float  # per device, one launch
    matmul_flops: float
    bytes: float
    seconds: float


def _nbytes(arrays) -> float:
    return float(sum(DTYPE_BYTES.get(dt, 4) * math.prod(dims) for dt, dims in arrays))


@dataclasses.dataclass(frozen=True)
class _Body:
    """What a called computation computes, kernels inside kernels summed."""
    matmuls: tuple  # HloMatmul
    other_flops: float


class KernelPricer:
    """Prices the kernels of one parsed module on one cluster (memoized per computation)."""

    def __init__(self, module: dict[str, Computation], dtypes: dict, cluster: Cluster):
        self.module, self.dtypes, self.cluster = module, dtypes, cluster
        self._bodies: dict[str, _Body] = {}

    def _body(self, name: str) -> _Body:
        if name not in self._bodies:
            self._bodies[name] = _Body((), 0.0)  # a cycle (never in valid HLO) ends here
            comp = self.module[name]
            matmuls, other = [], 0.0
            for instr in comp.instructions:
                if _is_matmul(instr):
                    m = _matmul(comp, instr, self.dtypes)
                    matmuls += [m] if m is not None else []
                elif instr.opcode not in _NO_ARITHMETIC and instr.arrays:
                    dims = comp.operand_dims(instr, 0) if instr.opcode == "reduce" else None
                    other += math.prod(dims if dims is not None else instr.arrays[0][1])
                for attr, callee in instr.calls:
                    if attr == "calls" and callee in self.module:
                        inner = self._body(callee)
                        matmuls += inner.matmuls
                        other += inner.other_flops
            self._bodies[name] = _Body(tuple(matmuls), other)
        return self._bodies[name]

    def _operand_bytes(self, comp: Computation, instr: Instruction) -> float:
        fused = next((self.module[c] for a, c in instr.calls if a == "calls" and c in self.module), None)
        total = 0.0
        for i, operand in enumerate(instr.operands):
            source = comp.by_name.get(operand)
            full = _nbytes(source.arrays if source is not None else _arrays(instr.operand_types[i]))
            total += _read_bytes(fused, i, full) if fused is not None else full
        return total

    def _result_bytes(self, instr: Instruction) -> float:
        fused = next((self.module[c] for a, c in instr.calls if a == "calls" and c in self.module), None)
        if fused is not None:
            root = fused.by_name.get(fused.root)
            parts = [fused.by_name.get(o) for o in root.operands] if root is not None and root.opcode == "tuple" else [root]
            if all(p is not None for p in parts) and any(p.opcode == "dynamic-update-slice" for p in parts):
                return sum(_written_bytes(fused, p) for p in parts)
        if instr.opcode == "dynamic-update-slice":
            return 0.0  # in place: the update is counted as an operand
        arrays = instr.arrays
        if instr.opcode == "custom-call" and instr.is_tuple and len(arrays) > 1:
            arrays = arrays[:-1]  # the last array is the library's scratch workspace
        return _nbytes(arrays)

    def price(self, comp: Computation, instr: Instruction) -> Kernel:
        """One top-level instruction (a kernel) of ``comp``."""
        if _is_matmul(instr):
            m = _matmul(comp, instr, self.dtypes)
            body = _Body((m,) if m is not None else (), 0.0)
        else:
            body = _Body((), 0.0)
            for attr, callee in instr.calls:
                if attr == "calls" and callee in self.module:
                    inner = self._body(callee)
                    body = _Body(body.matmuls + inner.matmuls, body.other_flops + inner.other_flops)
            if not instr.calls and instr.opcode not in _NO_ARITHMETIC and instr.arrays:
                body = _Body((), float(math.prod(instr.arrays[0][1])))
        nbytes = self._operand_bytes(comp, instr) + self._result_bytes(instr)
        if instr.opcode == "dynamic-update-slice":
            nbytes -= _nbytes(comp.by_name[instr.operands[0]].arrays) if instr.operands[0] in comp.by_name else 0.0
        matmul_s = sum(compute_time(self.cluster, m.flops, 0.0, m.dtype, matmul=True) for m in body.matmuls)
        dtype = self.dtypes.get((comp.name, instr.name)) or "f32"
        other_s = compute_time(self.cluster, body.other_flops, 0.0, NUMPY_NAMES.get(dtype, "float32"))
        seconds = max(matmul_s + other_s, nbytes / self.cluster.hbm_bandwidth)
        matmul_flops = sum(m.flops for m in body.matmuls)
        return Kernel(instr.name, matmul_flops + body.other_flops, matmul_flops, nbytes, seconds)


def _users(comp: Computation, name: str) -> list[tuple[Instruction, int]]:
    return [(u, k) for u in comp.instructions for k, o in enumerate(u.operands) if o == name]


def _read_bytes(fused: Computation, index: int, full: float) -> float:
    """Bytes a fused kernel reads of its operand ``index``: the slices it takes when it
    only slices it, nothing when it only updates it in place, else all of it."""
    param = next((i for i in fused.instructions if i.opcode == "parameter" and i.operands == (str(index),)), None)
    if param is None:
        return full
    users = _users(fused, param.name)
    if not users:
        return 0.0
    if all(u.opcode in _SLICING and k == 0 for u, k in users):
        return min(full, sum(_nbytes(u.arrays) for u, _ in users))
    if all(u.opcode == "dynamic-update-slice" and k == 0 for u, k in users):
        return 0.0
    return full


def _written_bytes(fused: Computation, part: Instruction) -> float:
    if part.opcode != "dynamic-update-slice":
        return _nbytes(part.arrays)
    update = fused.by_name.get(part.operands[1]) if len(part.operands) > 1 else None
    return _nbytes(update.arrays) if update is not None else 0.0
