"""What moving values between pipeline stages costs (numpy only).

``Links``: the intra- and inter-node links of a cluster as the stage search prices
transfers: per microbatch, an activation sent forward and its cotangent returned
(``time``); once a step, what crosses a boundary whole (``once``: a tied embedding out
and its gradient's running total back). ``once_exposed``: what of the once-per-step
transfers the pipeline's fill and drain leave on the step.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Links:
    """Transfer prices between stages (cost_model.Cluster's intra/inter-node links)."""

    intra_bandwidth: float  # bytes/s per device
    intra_latency: float
    inter_bandwidth: float
    inter_latency: float

    @classmethod
    def of(cls, cluster) -> "Links":
        return cls(cluster.intra_node.bandwidth, cluster.intra_node.latency,
                   cluster.inter_node.bandwidth, cluster.inter_node.latency)

    def _bw_lat(self, same_node: bool) -> tuple[float, float]:
        return (self.intra_bandwidth, self.intra_latency) if same_node else (self.inter_bandwidth, self.inter_latency)

    def time(self, nbytes, senders: int, same_node: bool):
        """Forward send and backward return of ``nbytes`` (a number or an array), ``senders``
        devices in parallel; nothing to send costs nothing."""
        (bw, lat), nbytes = self._bw_lat(same_node), np.asarray(nbytes, dtype=float)
        return np.where(nbytes > 0, 2.0 * (nbytes / (senders * bw) + lat), 0.0)

    def once(self, nbytes, senders: int, same_node: bool):
        """``nbytes`` in all (both ways together) sent once a step: a latency each way."""
        (bw, lat), nbytes = self._bw_lat(same_node), np.asarray(nbytes, dtype=float)
        return np.where(nbytes > 0, nbytes / (senders * bw) + 2.0 * lat, 0.0)


def once_exposed(once_s, stage_s):
    """Seconds a boundary's once-per-step transfers (``once_s``, both ways: a tied embedding
    out, its gradient's running total back) add to the step; ``stage_s``: the stage before
    the cut, one microbatch's forward and backward (arrays broadcast). The parameter leaves
    as the step starts and holds the link while that stage runs its first forward (a third
    of ``stage_s``): the first activation goes after it. The gradient leaves when the
    reading stage's loop ends, after the last cotangent, while that stage runs its last
    backward (two thirds); its update waits for it. What is left of each is exposed, as
    ``benchmarks.judge.pipeline`` replays them."""
    half, stage = np.asarray(once_s, dtype=float) / 2, np.asarray(stage_s, dtype=float)
    return np.maximum(half - stage / 3, 0.0) + np.maximum(half - 2 * stage / 3, 0.0)
