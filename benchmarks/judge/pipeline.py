"""Judge a pipelined plan by what XLA compiled for each of its stages.

``judge_pipeline(compiled, cluster)`` takes ``step.lower(*args).compile()`` of a
pipelined step (``.stages[s]`` with ``.devices`` and ``.programs``: ``"forward"``,
``"backward"`` once per microbatch, ``"pre"``, ``"post"`` (``.1``, ...) once per step;
``.num_microbatches``, ``.schedule``, ``.transfers``) and prices:

- every program like any SPMD program (``judge``), on its stage's devices: a collective
  whose group spans nodes is priced at the inter-node figures;
- every boundary's transfer per microbatch, forward and backward, each way
  ``bytes / (k * bandwidth) + latency`` with ``k = min(|stage s|, |stage s + 1|)``
  devices sending their share at once, on the intra-node link when both stages sit on
  one node, else the inter-node one (the stage search's ``Links``);
- the step, by replaying the schedule (``pipeline.schedule.dispatch_order``, GPipe or
  1F1B): each stage runs its PRE programs, then its forwards and backwards in its order,
  each as soon as its stage is free and its input has arrived (a forward after the
  previous stage's forward of that microbatch and the link; a backward after its own
  forward and the next stage's backward and the link; a link carries one transfer at a
  time each way), then its POST programs (the optimizer update). With equal stages and free
  links this is ``sum(t_s) + (M - 1) * max(t_s)``, t_s = forward + backward; ``formula_s``
  gives that closed form (links as stages of their own, once-per-step work added
  before and after) beside the replay.

Memory per stage under the schedule: the largest program's ``memory_analysis`` (its
arguments, results and temporaries, less what it donates) plus the forward results of
the microbatches the schedule keeps in flight besides the one a backward reads (1F1B:
``min(S - s, M)`` on stage ``s``; GPipe: ``M``).

``compute_s`` is the same replay with each program's compute alone and free links;
``comm_s = total_s - compute_s`` is what communication (collectives inside the stages
and transfers between them) adds to the step.

Values moved between stages once per step (``compiled.step_transfers``: the gradient
partials of a parameter kept on several stages, a tied embedding's, each stage's running
total sent to the others after its loop for their copies' update; a value still sent to
another stage before the loop) are priced on the link between the two stages, holding
every boundary link between them while they cross (one transfer, not one per boundary):
the reading stage starts its microbatches (or its POST, for a value only the update
reads) when the value has arrived; it leaves at the step's start (an argument), when its
source's PRE ends, or (read by POST) when its source's last backward ends; the two ways
of an exchange use the two directions of the links at once. Batch inputs are fed from
the host, as to a flat plan: not charged.

A step compiled for the cluster's GPUs (``shardsearch.target``; detected from the
programs' devices, or ``gpu=True``) has each program judged by ``judge_gpu`` on its
stage's devices; ``total_s`` then replays the programs' no-overlap times and
``overlap_s`` their times with overlap (each program's own scheduled replay), the figure
GPU rows are ranked by; ``exposed_comm_s = overlap_s - compute_s``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax

from benchmarks.judge.gpu import judge_gpu
from benchmarks.judge.price import Judged, judge
from cost_model.cluster import Cluster
from shardsearch.pipeline.assignment import StageKind
from shardsearch.pipeline.schedule import dispatch_order
from shardsearch.pipeline.stage_search import Schedule, in_flight, step_time

F, B = StageKind.FORWARD, StageKind.BACKWARD


@dataclasses.dataclass(frozen=True)
class JudgedStage:
    devices: tuple[int, ...]  # cluster devices of the stage's submesh
    programs: Mapping[str, Judged]  # plan key ("forward", "backward", "pre", "post.1", ...) -> judged
    stash_bytes: float = 0.0  # per device: what the forward program(s) of one microbatch return
    time_field: str = "total_s"  # what a program takes: "overlap_s" for a GPU program (with overlap)

    def _sum(self, prefix: str, field: str | None = None) -> float:
        field = field or self.time_field
        return sum(getattr(j, field) for k, j in self.programs.items() if k.split(".")[0] == prefix)

    @property
    def forward_s(self) -> float:
        return self._sum("forward")

    @property
    def backward_s(self) -> float:
        return self._sum("backward")

    @property
    def micro_s(self) -> float:
        """Forward + backward of one microbatch."""
        return self.forward_s + self.backward_s

    @property
    def pre_s(self) -> float:
        return self._sum("pre")

    @property
    def post_s(self) -> float:
        return self._sum("post")

    @property
    def step_s(self) -> float:
        """Once per step: PRE and POST."""
        return self.pre_s + self.post_s

    @property
    def program_peak_bytes(self) -> float:
        """The largest program's memory_analysis (per device)."""
        return max((j.memory_bytes for j in self.programs.values()), default=0.0)

    def memory_bytes(self, kept: int) -> float:
        """Per device under a schedule that keeps ``kept`` microbatches of activations."""
        return self.program_peak_bytes + max(kept - 1, 0) * self.stash_bytes


@dataclasses.dataclass(frozen=True)
class JudgedPipeline:
    stages: tuple[JudgedStage, ...]
    num_microbatches: int
    schedule: Schedule
    transfer_bytes: tuple[tuple[float, float], ...]  # per boundary per microbatch: (forward, backward), whole arrays
    transfer_s: tuple[tuple[float, float], ...]  # the same in seconds
    total_s: float  # the schedule replayed
    compute_s: float  # the replay with compute alone
    formula_s: float  # sum t + sum x + (M - 1) max(t, x), plus the slowest PRE and POST
    memory_per_stage: tuple[float, ...]  # per device, under the schedule
    step_transfer_s: tuple[tuple, ...] = ()  # once a step: (src, dst, seconds, after the loop, an argument)
    overlap_s: float | None = None  # GPU programs: the replay with each program's time with overlap
    xla_estimate_s: float | None = None  # (no XLA estimate of a whole pipeline)

    @property
    def comm_s(self) -> float:
        return self.total_s - self.compute_s

    @property
    def exposed_comm_s(self) -> float | None:
        return None if self.overlap_s is None else max(self.overlap_s - self.compute_s, 0.0)

    @property
    def memory_bytes(self) -> float:
        return max(self.memory_per_stage, default=0.0)

    @property
    def flops(self) -> float:
        """Per device over the step: every stage's programs, each as often as it runs,
        averaged over the pipeline's devices (as ``Judged.flops`` is per device)."""
        m, n = self.num_microbatches, sum(len(st.devices) for st in self.stages)
        work = sum(len(st.devices) * j.flops * (m if k.split(".")[0] in ("forward", "backward") else 1)
                   for st in self.stages for k, j in st.programs.items())
        return work / n if n else 0.0

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def comm_bytes(self) -> float:
        """Per device on the busiest stage: its collectives over the step plus its share of
        what it sends and receives."""
        m, out = self.num_microbatches, 0.0
        for s, st in enumerate(self.stages):
            coll = sum(sum(c.nbytes for c in j.collectives) * (m if k.split(".")[0] in ("forward", "backward") else 1)
                       for k, j in st.programs.items())
            moved = sum(sum(self.transfer_bytes[b]) for b in (s - 1, s) if 0 <= b < len(self.transfer_bytes))
            out = max(out, coll + m * moved / len(st.devices))
        return out

    @property
    def bubble(self) -> float:
        """Share of device-seconds the stages idle in the step."""
        busy = sum(len(st.devices) * (self.num_microbatches * st.micro_s + st.step_s) for st in self.stages)
        step = self.overlap_s if self.overlap_s is not None else self.total_s
        return max(0.0, 1.0 - busy / (step * sum(len(st.devices) for st in self.stages))) if step > 0 else 0.0

    def breakdown(self) -> str:
        """Where the step goes, in ms: per stage one microbatch's forward + backward and the
        once-per-step work (PRE + POST), per boundary one microbatch's transfers each way, the bubble."""
        ms = lambda s: f"{s * 1e3:.3g}"  # noqa: E731
        parts = [f"s{i} {ms(st.forward_s)}+{ms(st.backward_s)} x{self.num_microbatches}, once {ms(st.step_s)}"
                 for i, st in enumerate(self.stages)]
        parts += [f"link{i} {ms(f)}/{ms(b)} x{self.num_microbatches}" for i, (f, b) in enumerate(self.transfer_s)]
        if self.step_transfer_s:  # the two ways cross at once: the longer one
            ways = [sum(x[2] for x in self.step_transfer_s if (x[0] > x[1]) == back) for back in (False, True)]
            parts.append(f"once-per-step transfers {ms(max(ways))} each way")
        return "; ".join(parts) + f"; bubble {self.bubble:.0%}"

    def describe(self) -> str:
        shapes = sorted({len(st.devices) for st in self.stages})
        return (f"{self.num_stages} stages of {'/'.join(map(str, shapes))} devices, {self.num_microbatches} "
                f"microbatches, {self.schedule.value.upper()}")


def link_seconds(nbytes: float, src: Sequence[int], dst: Sequence[int], cluster: Cluster) -> float:
    """One transfer of ``nbytes`` (a whole array) from stage ``src``'s devices to ``dst``'s."""
    if nbytes <= 0:
        return 0.0
    nodes = {d // cluster.devices_per_node for d in (*src, *dst)}
    link = cluster.intra_node if len(nodes) == 1 else cluster.inter_node
    return nbytes / (min(len(src), len(dst)) * link.bandwidth) + link.latency


def replay(forward: Sequence[float], backward: Sequence[float], pre: Sequence[float], post: Sequence[float],
           links: Sequence[tuple[float, float]], schedule: Schedule, num_microbatches: int,
           step_links: Sequence[tuple] = ()) -> float:
    """Seconds from the first PRE to the last POST (see the module notes). ``step_links``:
    once-per-step transfers (source stage, reading stage, seconds, read only by POST, an
    argument): one read before the loop leaves when the step starts (an argument) or when
    its source's PRE ends, and goes first on the links it crosses (the microbatches'
    transfers queue behind it); one read by POST leaves when its source's loop ends."""
    n = len(forward)
    free = list(pre)  # when each stage can start its next program
    link_free = {(b, d): 0.0 for b in range(n - 1) for d in (0, 1)}  # (boundary, direction)
    done: dict[tuple[int, StageKind, int], float] = {}

    def arrive(b: int, direction: int, sent: float) -> float:
        start = max(link_free[(b, direction)], sent)
        link_free[(b, direction)] = start + links[b][direction]
        return link_free[(b, direction)]

    def carry(src: int, dst: int, sent: float, seconds: float) -> float:
        """A once-per-step transfer over every boundary between ``src`` and ``dst``."""
        path = [(b, int(src > dst)) for b in range(min(src, dst), max(src, dst))]
        end = max([sent] + [link_free[k] for k in path]) + seconds
        for k in path:
            link_free[k] = end
        return end

    for src, dst, seconds, after, *arg in step_links:
        if not after:
            free[dst] = max(free[dst], carry(src, dst, 0.0 if arg and arg[0] else pre[src], seconds))

    for s, kind, m in dispatch_order(schedule, n, num_microbatches):
        if kind is F:
            ready = arrive(s - 1, 0, done[(s - 1, F, m)]) if s > 0 else 0.0
            seconds = forward[s]
        else:
            ready = done[(s, F, m)]
            if s < n - 1:
                ready = max(ready, arrive(s, 1, done[(s + 1, B, m)]))
            seconds = backward[s]
        done[(s, kind, m)] = free[s] = max(free[s], ready) + seconds
    start = list(free)  # POST: after the stage's own loop and the running totals it reads
    for src, dst, seconds, after, *arg in step_links:
        if after:
            start[dst] = max(start[dst], carry(src, dst, free[src], seconds))
    return max(f + p for f, p in zip(start, post))


def judge_pipeline(compiled, cluster: Cluster, *, device_ids: Sequence[int] | None = None,
                   gpu: bool | None = None) -> JudgedPipeline:
    """Price ``compiled`` (a pipelined step's ``lower(...).compile()``) on ``cluster``.
    ``device_ids``: the cluster device of each jax device id, where they differ. ``gpu``:
    the programs were compiled for the cluster's GPUs (default: told by their devices)."""
    if gpu is None:
        gpu = _is_gpu(compiled)
    stages = []
    for st in compiled.stages:
        devices = tuple(device_ids[d] for d in st.devices) if device_ids is not None else tuple(st.devices)
        price = judge_gpu if gpu else judge
        programs = {k: price(c, cluster, device_ids=devices) for k, c in st.programs.items()}
        stash = sum(_output_bytes(c) for k, c in st.programs.items() if k.split(".")[0] == "forward")
        stages.append(JudgedStage(devices, programs, stash))
    schedule = Schedule(compiled.schedule)
    m, n = compiled.num_microbatches, len(stages)
    xbytes = tuple((float(f), float(b)) for f, b in compiled.transfers)
    xs = tuple((link_seconds(f, stages[i].devices, stages[i + 1].devices, cluster),
                link_seconds(b, stages[i].devices, stages[i + 1].devices, cluster)) for i, (f, b) in enumerate(xbytes))
    once = tuple((src, dst, link_seconds(nbytes, stages[src].devices, stages[dst].devices, cluster), *rest)
                 for src, dst, nbytes, *rest in getattr(compiled, "step_transfers", ()))

    def run(field: str, links, step_links) -> float:
        part = lambda name: [st._sum(name, field) for st in stages]  # noqa: E731
        return replay(part("forward"), part("backward"), part("pre"), part("post"), links, schedule, m, step_links)

    total = run("total_s", xs, once)
    compute = run("compute_s", [(0.0, 0.0)] * len(xs), ())
    overlap = run("overlap_s", xs, once) if gpu else None
    if gpu:
        stages = [dataclasses.replace(st, time_field="overlap_s") for st in stages]
    formula = (max(st.pre_s for st in stages) + step_time([st.micro_s for st in stages], [f + b for f, b in xs], m)
               + max(st.post_s for st in stages))
    memory = tuple(st.memory_bytes(in_flight(schedule, n - s, m)) for s, st in enumerate(stages))
    return JudgedPipeline(tuple(stages), m, schedule, xbytes, xs, total, compute, formula, memory, once, overlap)


def _is_gpu(compiled) -> bool:
    """Whether the stages' programs were compiled for GPUs (a deviceless target's devices)."""
    for st in compiled.stages:
        for c in st.programs.values():
            for sh in jax.tree.leaves(c.input_shardings):
                devices = getattr(sh, "device_set", None)
                if devices:
                    return next(iter(devices)).platform in ("cuda", "gpu", "rocm")
    return False


def _output_bytes(compiled) -> float:
    mem = compiled.memory_analysis()
    return float(mem.output_size_in_bytes) if mem is not None else 0.0
