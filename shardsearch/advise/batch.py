"""What one step processes: the batch size, tokens where a sequence dim is recognizable,
and the batch grown with the devices for weak scaling.

The batch inputs are the arguments the step does not return a next value of (params
and optimizer state are carried; tokens, labels, images are not), and the batch size is
their leading dim (the most common one, when they differ: a scalar step counter or an
rng key has none). Tokens: an integer batch input of rank >= 2 holds token ids
``[batch, seq, ...]``, so a sample is ``seq`` tokens.
"""

from __future__ import annotations

import collections
import dataclasses
import enum

import jax
import numpy as np

from shardsearch.errors import AdviseError
from shardsearch.graph import OpGraph
from shardsearch.memory import carried_args

NO_BATCH = (
    "cannot tell the batch size of this step: no argument that the step does not return has a leading "
    "dim (arguments returned as their next value are parameters/optimizer state). Pass the batch as an "
    "argument of shape [batch, ...]"
)
UNDIVIDED = (
    "batch={batch} (leading dim of {paths}) is divided by none of devices={counts} above 1, so no data "
    "parallel split exists; use a batch that is a multiple of {suggest}, or devices among {divisors}"
)


class BatchMode(enum.Enum):
    """How the global batch moves with the device count."""

    GLOBAL = "global"  # strong scaling: the batch passed is the global batch at every count
    PER_DEVICE = "per_device"  # weak scaling: the batch passed is one device's; n devices run n times it

    @classmethod
    def of(cls, value) -> "BatchMode":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower().replace("-", "_"))
        except ValueError:
            raise AdviseError(f"batch_mode={value!r} is not one of 'global' (strong scaling: the same global "
                              "batch at every device count) or 'per_device' (weak scaling: the batch passed "
                              "is one device's)") from None

    @property
    def words(self) -> str:
        if self is BatchMode.GLOBAL:
            return "strong scaling: the global batch is the same at every device count"
        return "weak scaling: the global batch grows with the devices (the batch passed is one device's)"


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    size: int  # samples per step, as traced
    positions: tuple[int, ...]  # flat argument positions whose leading dim is the batch
    paths: tuple[str, ...]
    seq: int | None  # tokens per sample, where a token-id input shows it

    def samples(self, scale: int = 1) -> int:
        return self.size * scale

    def tokens(self, scale: int = 1) -> int | None:
        return None if self.seq is None else self.size * scale * self.seq


def batch_info(graph: OpGraph) -> BatchInfo:
    carried = carried_args(graph)
    fed = [(i, graph.nodes[n].outputs[0]) for i, n in enumerate(graph.input_nodes) if i not in carried]
    leading = [(i, info) for i, info in fed if len(info.shape) >= 1 and info.shape[0] > 0]
    if not leading:
        raise AdviseError(NO_BATCH)
    size = collections.Counter(info.shape[0] for _, info in leading).most_common(1)[0][0]
    batch = [(i, info) for i, info in leading if info.shape[0] == size]
    tokens = [info.shape[1] for _, info in batch if len(info.shape) >= 2 and np.issubdtype(info.dtype, np.integer)]
    return BatchInfo(size=int(size), positions=tuple(i for i, _ in batch),
                     paths=tuple(graph.in_paths[i] for i, _ in batch), seq=int(tokens[0]) if tokens else None)


def check_divisible(info: BatchInfo, counts) -> None:
    """AdviseError when no count above 1 divides the global batch (strong scaling)."""
    many = [n for n in counts if n > 1]
    if many and all(info.size % n for n in many):
        divisors = [d for d in range(2, info.size + 1) if info.size % d == 0][:8]
        raise AdviseError(UNDIVIDED.format(batch=info.size, paths=", ".join(info.paths[:3]), counts=list(counts),
                                           suggest=min(many), divisors=divisors or [1]))


def scaled_args(abstract: tuple, info: BatchInfo, scale: int) -> tuple:
    """``abstract`` (ShapeDtypeStructs, ``trace.abstract_args``) with the batch inputs'
    leading dim times ``scale``."""
    leaves, tree = jax.tree_util.tree_flatten(abstract)
    grow = set(info.positions)
    out = [jax.ShapeDtypeStruct((x.shape[0] * scale,) + tuple(x.shape[1:]), x.dtype) if i in grow else x
           for i, x in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(tree, out)
