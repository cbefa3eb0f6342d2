"""The order a pipeline's per-microbatch programs are dispatched in (numpy only).

``stage_order(schedule, S, M)``: each stage's sequence of (FORWARD | BACKWARD, m):
GPipe runs every forward then every backward (M microbatches of activations held);
1F1B runs S - s - 1 forwards, then one forward and one backward in turn, then the
remaining backwards (stage s holds at most S - s microbatches of activations).

``dispatch_order(schedule, S, M)``: one sequence of (stage, kind, m) for a single
controller, merging the stages' sequences round by round so that each program comes
after what it needs: F(s, m) after F(s - 1, m); B(s, m) after F(s, m) and B(s + 1, m).
Every process of a multi-process run walks the same sequence, so the transfers between
them (collectives) come in the same order everywhere. jax dispatches asynchronously:
stages on different devices run at once, each in its own sequence's order.
"""

from __future__ import annotations

from shardsearch.pipeline.assignment import StageKind
from shardsearch.pipeline.stage_search import Schedule

F, B = StageKind.FORWARD, StageKind.BACKWARD


def stage_order(schedule: Schedule, num_stages: int, num_microbatches: int, stage: int) -> list[tuple[StageKind, int]]:
    m_all = range(num_microbatches)
    if schedule is Schedule.GPIPE:
        return [(F, m) for m in m_all] + [(B, m) for m in m_all]
    warm = min(num_stages - stage - 1, num_microbatches)
    out = [(F, m) for m in range(warm)]
    for i in range(num_microbatches - warm):
        out += [(F, warm + i), (B, i)]
    return out + [(B, m) for m in range(num_microbatches - warm, num_microbatches)]


def dispatch_order(schedule: Schedule, num_stages: int, num_microbatches: int) -> list[tuple[int, StageKind, int]]:
    queues = [stage_order(schedule, num_stages, num_microbatches, s) for s in range(num_stages)]
    heads = [0] * num_stages
    done: set[tuple[int, StageKind, int]] = set()

    def ready(s: int, kind: StageKind, m: int) -> bool:
        if kind is F:
            return s == 0 or (s - 1, F, m) in done
        return (s, F, m) in done and (s == num_stages - 1 or (s + 1, B, m) in done)

    out = []
    while len(out) < 2 * num_stages * num_microbatches:
        moved = False
        for s in range(num_stages):
            if heads[s] < len(queues[s]) and ready(s, *queues[s][heads[s]]):
                op = (s, *queues[s][heads[s]])
                heads[s] += 1
                done.add(op)
                out.append(op)
                moved = True
        if not moved:
            raise RuntimeError(f"{schedule.value} schedule of {num_stages} stages x {num_microbatches} "
                               "microbatches deadlocks")
    return out
