"""What moving values between pipeline stages costs (numpy only).

``Links``: the intra- and inter-node links of a cluster as the stage search prices
transfers: per microbatch, an activation sent forward and its cotangent returned
(``time``); once a step, what crosses between stages whole (``once``: the gradient
partials of a parameter kept on several stages, a tied embedding's, exchanged after
the loop, each way at once). ``once_exposed``: what of them the step waits for.
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
        """``nbytes`` sent once a step each way at once (an exchange of gradient partials)."""
        (bw, lat), nbytes = self._bw_lat(same_node), np.asarray(nbytes, dtype=float)
        return np.where(nbytes > 0, nbytes / (senders * bw) + lat, 0.0)


def once_exposed(once_s, stage_s):
    """Seconds the once-per-step transfers after a stage (``once_s``: the gradient partials
    of a parameter kept on several stages, each way at once) add to the step; ``stage_s``:
    that stage's microbatch (arrays broadcast). All of them: the first stage's partial of a
    tied embedding is complete only when its last backward, the step's last work, ends, and
    the other copy's update waits for it (the other way, the last stage's partial leaves
    when its loop ends and crosses under the first stage's last backward), as
    ``benchmarks.judge.pipeline`` replays them."""
    once = np.asarray(once_s, dtype=float)
    return once + np.zeros_like(np.asarray(stage_s, dtype=float))
