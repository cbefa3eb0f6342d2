"""Plan: what the search decided, as plain data a person can read.

A plan holds the layout of every argument and result (PartitionSpec pytrees), the
layout of every planned intermediate (for ``with_sharding_constraint``), what the
cost model predicted, and how the solver did.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from jax.sharding import PartitionSpec

from cost_model import MeshShape, Spec
from shardsearch.apply.mesh import to_partition_spec as to_partition_spec
from shardsearch.compare.baselines import Alternative, argument_roles
from shardsearch.costs import CostTables
from shardsearch.fallbacks import price_fallbacks
from shardsearch.fidelity import planned_collectives
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.memory import carried_args
from shardsearch.memory.explain import breakdown_and_peak
from shardsearch.plan_records import FallbackOp as FallbackOp
from shardsearch.plan_records import MemoryAtPeak as MemoryAtPeak
from shardsearch.plan_records import Predicted as Predicted
from shardsearch.plan_records import ReshardEdge as ReshardEdge
from shardsearch.plan_records import SolveStats as SolveStats
from shardsearch.solve.evaluate import evaluate
from shardsearch.solve.highs import formulation_size
from shardsearch.solve.problem import Problem, Solution
from shardsearch.strategies import Strategy


# The dearest resharding edges a plan keeps for ``explain`` (a deep model has thousands).
MAX_RESHARD_EDGES = 100


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the search decided, as plain data: the layout of every argument (``in_specs``,
    a pytree of ``PartitionSpec`` matching the arguments; flat: ``flat_in_specs`` by
    ``in_paths``) and result, every planned intermediate, what the cost model predicted
    (``predicted``) and how the solver did (``stats``). ``summary()`` says it in words."""

    mesh: MeshShape
    cluster: str
    in_specs: Any  # pytree of PartitionSpec matching the arguments
    out_specs: Any  # pytree of PartitionSpec matching the result
    flat_in_specs: tuple[Spec, ...]
    flat_out_specs: tuple[Spec, ...]
    in_paths: tuple[str, ...]
    out_paths: tuple[str, ...]
    node_out_specs: dict[int, tuple[Spec, ...]]  # planned layout of each operator's outputs
    # operands an operator needs in another layout than their producer gives:
    # node -> {operand position: spec}; the resharding the plan paid for happens there
    node_operand_specs: dict[int, dict[int, Spec]]
    node_strategy: dict[int, str]  # readable strategy name per operator
    node_primitive: dict[int, str]
    predicted: Predicted
    stats: SolveStats
    fallback: tuple[FallbackOp, ...]
    program_hash: str
    # (shape, dtype name) of each argument leaf, to say what differs when a plan is
    # applied to another program; () for plans read from files that predate them
    in_avals: tuple[tuple[tuple[int, ...], str], ...] = ()
    # What `shardsearch explain` reads; empty for plans from files that predate them.
    node_compute_s: dict[int, float] = dataclasses.field(default_factory=dict)  # chosen strategy's compute
    node_comm_s: dict[int, float] = dataclasses.field(default_factory=dict)  # its own collectives
    node_label: dict[int, str] = dataclasses.field(default_factory=dict)  # source line of each operator
    reshard_edges: tuple[ReshardEdge, ...] = ()  # dearest first, at most MAX_RESHARD_EDGES
    in_local_bytes: tuple[float, ...] = ()  # per-device bytes of each argument leaf
    # What the summary's verdict reads (empty / 0 in plan files that predate them):
    in_roles: tuple[str, ...] = ()  # "parameter", "optimizer state" or "input" per argument leaf
    compared: tuple[Alternative, ...] = ()  # the recipes priced on the same problem; see alternatives()
    remat_regions: int = 0  # jax.checkpoint regions the step recomputes
    # forward layers the search chose to recompute in the backward pass, and the policy
    # (shardsearch.remat.RematPlan); None: the step keeps what it traced to keep
    remat: Any = None
    # microbatches, stages and schedule (shardsearch.pipeline.plan_data.PipelinePlan); None: the step runs whole
    pipeline: Any = None
    # why the search pipelined the step or did not, in words (shardsearch.pipeline.choose);
    # empty where pipelining was not considered (pipeline=None; "auto" is the default)
    pipeline_why: str = ""
    # what the predicted peak is made of: no argument donated, then the state donated
    # (shardsearch.memory.explain); () in plan files that predate it
    memory_at_peak: tuple[MemoryAtPeak, ...] = ()

    def summary(self) -> str:
        """The plan in words and tables: the verdict (which parallelism, over which mesh
        axes, and what data parallel, FSDP and tensor parallel would cost), then the
        prediction, the layouts and the strategies chosen, with a legend of the notation."""
        from shardsearch.report import summarize

        return summarize(self)

    def explain(self, *, top: int = 10, operators: bool = False, primitives: tuple[str, ...] = ()) -> str:
        """The plan taken apart, top-down: the verdict, the alternatives, the top
        communication, memory and resharding consumers; with ``operators=True`` every
        operator's strategy too (``primitives`` limits that table). What
        ``shardsearch explain`` prints."""
        from shardsearch.report import explain

        return explain(self, top=top, operators=operators, primitives=primitives)

    def plot(self, path) -> None:
        """Draw the plan to ``path`` (PNG): per weight and per contraction's output in
        program order, which mesh axes split each dim, and where the predicted step time
        goes (compute, collectives, resharding). Needs matplotlib (``pip install
        'shardsearch[plot]'``)."""
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            from shardsearch.errors import OptionError

            raise OptionError("plan.plot needs matplotlib: pip install 'shardsearch[plot]' (or matplotlib)") from err
        from shardsearch.reporting.plot import plot_plan

        plot_plan(self, path)

    def alternatives(self) -> tuple[Alternative, ...]:
        """Data parallel, FSDP (ZeRO-3) and tensor parallel on the same model and cluster,
        priced by the same cost model: each fixes the arguments' layouts as the recipe
        says and the solver completes the rest (see ``shardsearch.compare``). Each has
        ``name``, ``total_s``, ``compute_s``, ``comm_s``, ``peak_bytes``, ``fits`` and the
        argument layouts ``in_specs``. Empty on a one-device mesh, with
        ``compare=False``, and in plan files that predate it."""
        return self.compared

    def save(self, path) -> None:
        """Write the plan as JSON (versioned; see ``Plan.load``)."""
        from shardsearch.apply.plan_io import save_plan

        save_plan(self, path)

    @classmethod
    def load(cls, path) -> "Plan":
        """Read a plan written by ``save``. Its ``in_specs``/``out_specs`` pytrees are
        rebuilt once it is applied to a function (``plan.apply(fn)``); the flat
        ``flat_in_specs``/``in_paths`` are there at once."""
        from shardsearch.apply.plan_io import read_plan_file

        return cls.from_dict(read_plan_file(path), str(path))

    @classmethod
    def from_dict(cls, d: dict, where: str = "plan") -> "Plan":
        """The plan a plan file's JSON object holds (``plan_io.plan_to_dict`` writes it);
        ``where`` names its source in the error a malformed object raises."""
        from shardsearch.apply.plan_io import plan_fields

        fields = plan_fields(d, where)
        if fields["pipeline"] is not None:  # stages' program plans: fields -> plans
            fields["pipeline"] = fields["pipeline"].map_programs(lambda f: cls(**f))
        return cls(**fields)

    def fingerprint(self) -> str:
        """A short stable hash of what was chosen: program, mesh, cluster and every layout.

        Timings and predicted costs are left out, so two processes (or two runs) that
        chose the same shardings print the same fingerprint.
        """
        import hashlib
        import json

        from shardsearch.apply.plan_io import plan_to_dict

        chosen = {k: v for k, v in plan_to_dict(self, costs=False).items() if k not in ("stats", "predicted")}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    def with_trees(self, in_tree, out_tree) -> "Plan":
        """This plan with ``in_specs``/``out_specs`` as pytrees of the given structures
        (unchanged for a graph without pytrees: a pipeline stage's program)."""
        import jax

        if in_tree is None or out_tree is None:
            return self

        return dataclasses.replace(
            self,
            in_specs=jax.tree_util.tree_unflatten(in_tree, [to_partition_spec(s) for s in self.flat_in_specs]),
            out_specs=jax.tree_util.tree_unflatten(out_tree, [to_partition_spec(s) for s in self.flat_out_specs]),
        )

    def partition_spec_source(self, argnum: int = 0, *, name: str = "specs") -> str:
        """Python source assigning ``name`` the PartitionSpec pytree of argument ``argnum``,
        to paste into code (``jax.device_put(x, NamedSharding tree)`` or ``in_shardings``)."""
        from shardsearch.apply.export import partition_spec_source

        return partition_spec_source(self, argnum, name=name)

    def sharding_rules(self, argnum: int = 0) -> list[tuple[str, PartitionSpec]]:
        """``[(path_regex, PartitionSpec), ...]`` for argument ``argnum``, matched against
        ``jax.tree_util.keystr`` paths; apply them with ``shardsearch.apply_rules``."""
        from shardsearch.apply.export import sharding_rules

        return sharding_rules(self, argnum)

    def fidelity(self, compiled):
        """What this plan predicted next to what XLA compiled for it (collectives per kind
        and mesh axes, communication bytes, peak memory); ``print()`` it for a table.
        ``compiled``: ``auto(fn, ...).lower(*args).compile()`` or ``plan.apply(fn).lower(...).compile()``."""
        from shardsearch.fidelity import fidelity

        return fidelity(self, compiled)

    def apply(self, fn: Callable, *, mesh=None, donate_argnums=(), **calling):
        """``fn`` compiled with this plan, without searching again (see ``shardsearch.auto``;
        ``calling``: ``static_argnums``, ``static_argnames``, ``donate_argnames`` as there)."""
        from shardsearch.apply.planned import Planned

        return Planned.from_plan(fn, self, mesh=mesh, donate_argnums=donate_argnums, **calling)


def _resharded_operands(graph: OpGraph, chosen: list[Strategy]) -> dict[int, dict[int, Spec]]:
    out: dict[int, dict[int, Spec]] = {}
    for n in graph.nodes:
        if n.kind is not NodeKind.OP:
            continue
        for j, ref in enumerate(n.inputs):
            if isinstance(ref, ValueRef):
                want = chosen[n.id].in_specs[j]
                if want != chosen[ref.node].out_specs[ref.index]:
                    out.setdefault(n.id, {})[j] = want
    return out


def _node_name(graph: OpGraph, i: int) -> str:
    node = graph.nodes[i]
    return node.label if node.kind is NodeKind.INPUT else f"{node.primitive} #{i}"


def _edge_layouts(graph: OpGraph, chosen: list[Strategy], u: int, v: int) -> tuple[int, Spec] | None:
    """(output of ``u``, layout ``v`` needs it in) for a problem edge u -> v, preferring
    an operand that is actually resharded; None for an edge of a kind not known here."""
    node = graph.nodes[v]
    if node.kind is NodeKind.OP:
        wants = [(r.index, chosen[v].in_specs[j]) for j, r in enumerate(node.inputs)
                 if isinstance(r, ValueRef) and r.node == u]
    else:  # a result returned in its argument's layout
        arg = graph.input_nodes.index(v) if v in graph.input_nodes else -1
        wants = [(r.index, chosen[v].out_specs[0]) for r, a in zip(graph.outputs, graph.output_aliases)
                 if a == arg and isinstance(r, ValueRef) and r.node == u]
    moved = [(i, want) for i, want in wants if want != chosen[u].out_specs[i]]
    return (moved or wants or [None])[0]


def _reshard_edges(graph: OpGraph, chosen: list[Strategy], problem: Problem, choice,
                   copies: tuple = ()) -> tuple[ReshardEdge, ...]:
    """The dearest reshards the plan pays for; a copy several readers share is listed
    once, on the first of them that reads it."""
    copy_of = {c.node: c for c in copies}
    priced = []
    for e, (u, v) in enumerate(np.asarray(problem.edges).reshape(-1, 2)):
        seconds = float(problem.edge_costs[e][choice[u], choice[v]])
        if seconds <= 0 or u in copy_of:  # from a copy node: a penalty no optimal plan pays
            continue
        if v in copy_of:
            copy = copy_of[v]
            v = next((r for r in copy.readers if _edge_layouts(graph, chosen, int(u), r)[1] == copy.layout),
                     copy.readers[0])
            layouts = (copy.key[1], copy.layout)
        else:
            layouts = _edge_layouts(graph, chosen, int(u), int(v))
        if layouts is not None:
            priced.append((seconds, int(u), int(v), layouts))
    priced.sort(key=lambda x: (-x[0], x[1], x[2]))  # deterministic order among equal costs
    return tuple(
        ReshardEdge(u, v, _node_name(graph, u), _node_name(graph, v), graph.nodes[u].outputs[i].shape,
                    chosen[u].out_specs[i], want, seconds)
        for seconds, u, v, (i, want) in priced[:MAX_RESHARD_EDGES]
    )


def _collective_memory_s(problem: Problem, costs: CostTables, choice) -> float:
    """Seconds the chosen strategies' collectives and the chosen reshards spend on the
    device's memory (the rest of their cost is the links' time: communication)."""
    nodes = sum(float(costs.local[i][c]) for i, c in enumerate(choice))
    edges = sum(float(m[choice[u], choice[v]]) for (u, v), m in zip(np.asarray(problem.edges), costs.edge_local))
    return nodes + edges


def memory_at_peak(why, donated: bool) -> MemoryAtPeak:
    """A ``memory.PeakExplained`` as the plan's plain record."""
    return MemoryAtPeak(why.peak_bytes, donated, why.by_kind,
                        tuple((c.kind, c.name, c.nbytes, c.cut) for c in why.top))


def plan_layouts(graph: OpGraph, strategies: list[list[Strategy]], choice) -> tuple:
    """(chosen strategy per node, flat argument layouts, each operator's output layouts,
    the resharded operands) of a choice: what the plan's memory is analysed on."""
    chosen = [strategies[i][int(c)] for i, c in enumerate(choice[:len(graph.nodes)])]
    flat_in = tuple(chosen[n].out_specs[0] for n in graph.input_nodes)
    node_out_specs = {n.id: chosen[n.id].out_specs for n in graph.nodes if n.kind is NodeKind.OP}
    return chosen, flat_in, node_out_specs, _resharded_operands(graph, chosen)


def plan_memory(graph: OpGraph, layouts: tuple, mesh: MeshShape, donated: frozenset[int]) -> tuple:
    """``breakdown_and_peak`` of a plan's ``layouts`` (``plan_layouts``): its memory
    figures (the peak) and what is live at the peak, ``donated`` arguments reused."""
    _, flat_in, node_out_specs, operand_specs = layouts
    return breakdown_and_peak(graph, flat_in, node_out_specs, mesh, node_operand_specs=operand_specs,
                              donated=frozenset(donated))


def assemble_plan(
    graph: OpGraph,
    strategies: list[list[Strategy]],
    fallback: frozenset[int],
    problem: Problem,
    costs: CostTables,
    solution: Solution,
    *,
    mesh: MeshShape,
    cluster: str,
    program_hash: str,
    search_s: float,
    memory_analysed: dict | None = None,
) -> Plan:
    """The Plan of ``solution``; ``memory_analysed``: ``plan_memory`` of these layouts
    already computed, by the donated argument set (frozenset() or every carried one)."""
    choice = solution.choice  # the graph's nodes, then the copy nodes (costs.copies)
    chosen, flat_in, node_out_specs, operand_specs = plan_layouts(graph, strategies, choice)
    flat_out = []
    for ref, arg in zip(graph.outputs, graph.output_aliases):
        if arg is not None:  # returned in the layout its argument comes in
            flat_out.append(flat_in[arg])
        elif isinstance(ref, ValueRef):
            flat_out.append(chosen[ref.node].out_specs[ref.index])
        else:
            flat_out.append(((),) * len(ref.info.shape))
    ops = [n for n in graph.nodes if n.kind is NodeKind.OP]
    breakdown = evaluate(problem, choice)
    memory_s = _collective_memory_s(problem, costs, choice)
    unreduced = formulation_size(problem)
    compute = float(sum(costs.compute[i][c] for i, c in enumerate(choice))) + memory_s
    analysed = [(memory_analysed or {}).get(donated) or plan_memory(
        graph, (chosen, flat_in, node_out_specs, operand_specs), mesh, donated)
        for donated in (frozenset(), frozenset(carried_args(graph)))]
    memory = [m for m, _ in analysed]
    collectives = planned_collectives(graph, chosen, mesh)
    plan = Plan(
        mesh=mesh,
        cluster=cluster,
        in_specs=None,
        out_specs=None,
        flat_in_specs=flat_in,
        flat_out_specs=tuple(flat_out),
        in_paths=graph.in_paths,
        out_paths=graph.out_paths,
        node_out_specs=node_out_specs,
        node_operand_specs=operand_specs,
        node_strategy={n.id: chosen[n.id].name for n in ops},
        node_primitive={n.id: n.primitive for n in ops},
        predicted=Predicted(
            compute, breakdown.total - compute, breakdown.total, memory[0].peak_bytes,
            params_bytes=memory[0].params_bytes, opt_state_bytes=memory[0].opt_state_bytes,
            inputs_bytes=memory[0].inputs_bytes, outputs_bytes=memory[0].outputs_bytes,
            activations_bytes=memory[0].activations_bytes, peak_donated_bytes=memory[1].peak_bytes,
            comm_bytes=float(sum(c[3] for c in collectives)), collectives=collectives,
            collective_memory_s=memory_s,
        ),
        stats=SolveStats(
            num_nodes=len(graph.nodes),
            num_variables=solution.num_variables,
            num_constraints=solution.num_constraints,
            reduced_nodes=solution.reduced_nodes,
            solve_s=solution.solve_s,
            status=solution.status,
            objective=solution.objective,
            bound=solution.bound,
            search_s=search_s,
            unreduced_variables=unreduced[0],
            unreduced_constraints=unreduced[1],
        ),
        fallback=price_fallbacks(graph, fallback, problem, costs.compute, choice, mesh),
        program_hash=program_hash,
        in_avals=tuple((graph.nodes[n].outputs[0].shape, graph.nodes[n].outputs[0].dtype.name) for n in graph.input_nodes),
        node_compute_s={n.id: float(costs.compute[n.id][choice[n.id]]) for n in ops},
        node_comm_s={n.id: float(costs.comm[n.id][choice[n.id]]) for n in ops},
        node_label={n.id: n.label for n in ops},
        reshard_edges=_reshard_edges(graph, chosen, problem, choice, costs.copies),
        in_local_bytes=tuple(float(problem.node_memory[n][choice[n]]) for n in graph.input_nodes),
        in_roles=argument_roles(graph),
        remat_regions=len(graph.remats),
        memory_at_peak=tuple(memory_at_peak(why, donated) for (_, why), donated in zip(analysed, (False, True))),
    )
    return plan.with_trees(graph.in_tree, graph.out_tree)


