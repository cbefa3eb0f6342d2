"""Graph + per-node strategies + cluster -> the numeric Problem (and what it means).

Node cost = compute time of the strategy + time of the collectives it implies.
Edge cost = time to reshard a producer's output into the layout its consumer needs.
Outputs that are the next value of an argument (new params, new optimizer state)
get an edge back to that argument's node: the step must return them in the layout
it takes them in, and that resharding is paid every step.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from cost_model import Cluster, CollectiveKind, MeshShape, collective_cost, compute_time
from cost_model.collectives import collective_local_bytes
from cost_model.mesh import local_bytes
from cost_model.reshard import reshard_matrices
from shardsearch.costs.follow import follow_mapping, follow_source
from shardsearch.costs.fusion import (FUSIBLE, MATMULS, absorbed_bytes, ends_fusion, folded_reverses, fused_bytes,
                                      region_inputs, whole_bytes)
from shardsearch.costs.combined import combine_edges
from shardsearch.costs.copies import Edges, Read, SharedCopy, share_copies
from shardsearch.costs.dot_merge import merged_dots, merged_time
from shardsearch.costs.dot_strength import strength_reduced
from shardsearch.costs.gathers import Combinable, GatherPricing
from shardsearch.costs.overlap import as_one_node, earlier_compute, exposed_comm, ready_at_start
from shardsearch.costs.reassociate import merge_edges
from shardsearch.graph import NodeKind, OpGraph, ValueRef
from shardsearch.memory import carried_args, forward_end, kept_for_backward, lifetimes, live_at, peak_point
from shardsearch.memory.combine import HEAVY, off_critical_path
from shardsearch.solve.problem import Problem
from shardsearch.strategies import Strategy


@dataclasses.dataclass(frozen=True)
class CostTables:
    """Per-node compute and communication seconds, kept apart for the plan's breakdown.

    ``local``: seconds each node's own collectives spend on the device's memory (their
    operand and result buffers); ``edge_local``: the same for the resharding on each
    edge of the Problem, in its edge order (the links' time of both is communication)."""

    compute: list[np.ndarray]
    comm: list[np.ndarray]
    local: list[np.ndarray]
    edge_local: list[np.ndarray] = dataclasses.field(default_factory=list)
    # The Problem's nodes after the graph's: one per value resharded into a layout that
    # several readers share (costs.copies), each with two strategies (no copy, copy).
    copies: tuple[SharedCopy, ...] = ()
    reads: tuple = ()  # per Problem edge before the copies', what it reads (costs.copies.Read) or None
    # The edges whose reshards XLA's all-gather combiner merges (values ready at the step's
    # start: FSDP's gathers, the batch's): ``costs.gathers.Combinable``, settled by ``gathers.settle``.
    hidden_reshards: tuple = ()


def _priced_on(c, off_path: bool, cluster: Cluster, combined: Cluster) -> Cluster:
    # XLA's combiner merges independent all-reduces into one (measured on the CPU
    # backend it leaves reduce-scatters and all-gathers apart, each paying its latency).
    return combined if off_path and c.kind is CollectiveKind.ALL_REDUCE else cluster


def combined_all_reduces(graph: OpGraph, chosen: list[Strategy] | None, options=None) -> int:
    """How many off-critical-path operators of a plan all-reduce (XLA merges them into
    one); with ``chosen=None``, how many could (any of their ``options`` does)."""
    combined = off_critical_path(graph)
    pick = (lambda i: [chosen[i]]) if chosen is not None else (lambda i: options[i])
    return sum(
        1 for i in combined
        if any(c.kind is CollectiveKind.ALL_REDUCE for st in pick(i) for c in st.collectives)
    )


# Operators that run on the matrix units: priced at the per-dtype peak scaled by the
# cluster's matmul efficiency curve at their FLOPs per device (small ones do not fill it).


def compute_dtype(graph: OpGraph, node) -> str:
    """The dtype an operator computes in: its widest floating tensor operand.

    Operands, not the output: a dot of bf16 operands with ``preferred_element_type=f32``
    runs on the bf16 tensor cores and only accumulates in f32; a bf16 x f32 dot (jnp
    promotes lazily) converts to f32 and runs at the f32 rate, hence the widest. Integer
    operands (indices of a gather) do not set the rate when a float one is there; an
    operator without tensor operands (iota, a random draw) computes in its output dtype.
    """
    key = (tuple(graph.info(r).dtype for r in node.inputs if isinstance(r, ValueRef)),
           tuple(o.dtype for o in node.outputs))
    got = _COMPUTE_DTYPES.get(key)
    if got is None:
        dtypes, outs = key
        floats = [d for d in dtypes if "float" in d.name] or list(dtypes) or list(outs)
        got = _COMPUTE_DTYPES[key] = max(floats, key=lambda d: d.itemsize).name if floats else "float32"
    return got


_COMPUTE_DTYPES: dict = {}  # (operand dtypes, result dtypes) -> compute_dtype (dtype.name is slow)


def node_costs(
    graph: OpGraph, strategies: list[list[Strategy]], cluster: Cluster, mesh: MeshShape, combined_share: float,
    memo: dict | None = None,
) -> CostTables:
    """``combined_share``: the fraction of a launch latency each off-critical-path
    all-reduce pays (XLA merges them into one; see ``combined_all_reduces``). On a cluster
    whose collectives overlap compute, those off the critical path are priced by what they
    leave exposed (``costs.overlap``). ``memo``: a dict kept for this graph and strategies
    on one mesh and cluster, or clusters that differ only in ``overlap_contention``: the
    tables before overlap, per ``combined_share``, are computed once for all."""
    key = ("node costs", combined_share)
    if memo is None or key not in memo:
        tables = _full_node_costs(graph, strategies, cluster, mesh, combined_share)
        if memo is not None:
            memo[key] = tables
    else:
        tables = memo[key]
    compute, comm, local = tables
    combined = off_critical_path(graph)
    if cluster.overlap_contention is not None:  # gradient reductions under the rest of the backward
        comm = exposed_comm(graph, strategies, cluster, mesh, combined, compute, comm)
        # an asynchronous collective's reads and writes of the device's memory run beside the
        # kernels: they are the contention its exposed time already counts, not kernel time
        local = [np.zeros_like(lo) if i in combined else lo for i, lo in enumerate(local)]
    return CostTables(list(compute), list(comm), list(local))


def _full_node_costs(graph: OpGraph, strategies: list[list[Strategy]], cluster: Cluster, mesh: MeshShape,
                     combined_share: float) -> tuple[list, list, list]:
    """(compute, comm, local) per node, every collective in full (``node_costs``)."""
    users = graph.users()
    graph_outputs = {r.node for r in graph.outputs if isinstance(r, ValueRef)}
    combined = off_critical_path(graph)
    no_latency = cluster.with_latency_share(combined_share)
    compute, comm, local = [], [], []
    ends_at, regions = ends_fusion(graph, users, graph_outputs), {}
    gpu = cluster.gpu_target is not None  # rewrites of XLA's GPU compiler
    merged = merged_dots(graph) if gpu else {}  # its DotMerger
    folded = folded_reverses(graph, users) if gpu else frozenset()  # its convolution rewriter
    # Repeated layers share their strategy lists (strategies/per_node.py caches them):
    # a node priced like an earlier one (same list, same fusion context) reuses its row.
    seen: dict = {}
    for node, strats in zip(graph.nodes, strategies):
        fused = node.kind is NodeKind.OP and node.primitive in FUSIBLE
        ends = ends_at[node.id]
        starts = tuple(isinstance(r, ValueRef) and graph.nodes[r.node].primitive not in FUSIBLE for r in node.inputs)
        absorbed = () if fused or node.kind is not NodeKind.OP else tuple(
            (j, whole_bytes(graph, region_inputs(graph, r, ends_at, regions))) for j, r in enumerate(node.inputs)
            if isinstance(r, ValueRef) and graph.nodes[r.node].primitive in FUSIBLE and not ends_at[r.node])
        dtype = compute_dtype(graph, node) if node.kind is NodeKind.OP else None
        matmul = node.kind is NodeKind.OP and node.primitive in MATMULS
        k = merged.get(node.id, 1)
        free = node.id in folded
        # XLA's GPU compiler runs a dot that is a vector on some device as multiply + reduce
        vector_dot = gpu and matmul and node.primitive == "dot_general"
        shapes = tuple(tuple(graph.info(r).shape) for r in node.inputs) if vector_dot else ()
        key = (id(strats), fused, ends, starts, absorbed, node.id in combined, dtype, matmul, k, free)
        if key not in seen:
            times = []
            for s in strats if not free else ():
                nbytes = (fused_bytes(graph, node, s, mesh, ends) if fused
                          else s.bytes_accessed - absorbed_bytes(graph, node, s, mesh, absorbed))
                if vector_dot and strength_reduced(node.params["dimension_numbers"], shapes, s.in_specs, mesh):
                    times.append(compute_time(cluster, s.flops, nbytes, dtype))
                else:
                    times.append(merged_time(cluster, s.flops, nbytes, dtype, k) if k > 1
                                 else compute_time(cluster, s.flops, nbytes, dtype, matmul=matmul))
            seen[key] = (np.array(times) if not free else np.zeros(len(strats)), np.array([
                sum(collective_cost(_priced_on(c, node.id in combined, cluster, no_latency), mesh, c)
                    for c in s.collectives)
                for s in strats
            ]))
            seen[key] += (np.array([sum(collective_local_bytes(mesh, c) for c in s.collectives)
                                    for s in strats]) / cluster.hbm_bandwidth,)
        if node.trips == 1:  # repeated layers share their rows (never written in place)
            compute.append(seen[key][0])
            comm.append(seen[key][1])
            local.append(seen[key][2])
        else:  # a scan body's operator runs every iteration
            compute.append(seen[key][0] * node.trips)
            comm.append(seen[key][1] * node.trips)
            local.append(seen[key][2] * node.trips)
    return compute, comm, local


def _node_memory(graph: OpGraph, strategies: list[list[Strategy]], mesh: MeshShape,
                 donated: frozenset[int] = frozenset()) -> list[np.ndarray]:
    """Bytes per device each strategy of a node adds to the step's peak, as one linear sum.

    The ILP keeps a single budget row (merge.py eliminates nodes by dynamic programming,
    which a max over time would defeat), so this is a linear proxy of the peak that
    ``shardsearch.memory`` computes by liveness:
      * an argument: its buffer, twice if the step returns its next value (that result
        has a buffer of its own) unless the caller donates it (``donated``);
      * an operator: each output live at the unsharded program's peak point
        (``memory.peak_point``) or kept for the backward pass (live across the forward
        end, ``memory.kept_for_backward``; in a training step whose activations dominate
        the two points coincide), and each result it returns that is no argument's next
        value (a loss), in the strategy's layout;
      * constants: nothing (XLA embeds them in the program, outside the figures).
    The true peak is arguments + max over time(live temporaries + results made so far);
    the proxy adds the results and the kept activations instead of taking the larger,
    so it over-counts by the smaller of the two, and it leaves out one operator's
    short-lived temporaries. Resharded copies live at those points are on the edges
    (``_edge_memory``).
    """
    carried = carried_args(graph)
    counted: dict[int, list[int]] = collections.defaultdict(list)  # node -> output indices, once per use
    lives = lifetimes(graph)
    # the two places a plan's peak lands: where the unsharded program peaks, and where
    # the backward pass starts (the peak of a plan that splits the state but not the
    # activations); a value live at both counts once
    for v in sorted(set(live_at(peak_point(graph, lives), lives)) | set(kept_for_backward(graph, lives)),
                    key=lambda v: (v.ref.node, v.ref.index)):
        counted[v.ref.node].append(v.ref.index)
    for ref, arg in zip(graph.outputs, graph.output_aliases or (None,) * len(graph.outputs)):
        if isinstance(ref, ValueRef) and arg is None:
            counted[ref.node].append(ref.index)
    arg_of = {n: i for i, n in enumerate(graph.input_nodes)}
    seen: dict = {}  # repeated layers share strategy lists: price each (list, outputs) once
    sizes: dict = {}  # (shape, itemsize, layout) -> bytes per device: layouts repeat across lists

    def nbytes(info, spec) -> float:
        key = (info.shape, info.dtype.itemsize, spec)
        if key not in sizes:
            sizes[key] = local_bytes(info.shape, info.dtype.itemsize, spec, mesh)
        return sizes[key]

    mem = []
    for node, strats in zip(graph.nodes, strategies):
        outs = list(counted.get(node.id, ()))
        if node.kind is NodeKind.INPUT:
            outs += [0] * (1 + (arg_of[node.id] in carried and arg_of[node.id] not in donated))
        if node.kind is NodeKind.CONST or not outs:
            mem.append(np.zeros(len(strats)))
            continue
        key = (id(strats), tuple(outs))
        if key not in seen:
            seen[key] = np.array([
                sum(nbytes(node.outputs[k], s.out_specs[k]) for k in outs)
                for s in strats
            ])
        mem.append(seen[key])
    return mem


def _edge_memory(graph: OpGraph, strategies: list[list[Strategy]], mesh: MeshShape,
                 edges: list[tuple[int, int]]) -> dict[int, np.ndarray]:
    """Bytes per device of the resharded copies the budget row counts, per operand edge.

    A copy lives from the value's producer to its reader (``memory.resharded_copies``:
    a weight all-gathered at the start of the step and read by the backward pass), so
    the copy made for edge u -> v is counted when that span covers one of the two
    points ``_node_memory`` counts at: it holds the reader's layout whenever that
    differs from the producer's. Operand edges come first in ``build_problem``'s list,
    in graph order. Several readers of one value in the same layout share one copy in
    the compiled program: where the search gave them a copy node (``costs.copies``) its
    edge holds the bytes once; elsewhere each counts here (the row is linear), which
    over-counts.
    """
    lives = lifetimes(graph)
    t_peak, t_fwd = peak_point(graph, lives), forward_end(graph)
    out: dict[int, np.ndarray] = {}
    seen: dict = {}
    e = 0
    for node in graph.nodes:
        for j, ref in enumerate(node.inputs):
            if not isinstance(ref, ValueRef):
                continue
            assert edges[e] == (ref.node, node.id), "operand edges must come first, in graph order"
            live = ref.node <= t_peak <= node.id or ref.node <= t_fwd < node.id
            if live and node.kind is NodeKind.OP and graph.nodes[ref.node].kind is not NodeKind.CONST:
                info = graph.info(ref)
                srcs = tuple(s.out_specs[ref.index] for s in strategies[ref.node])
                dsts = tuple(s.in_specs[j] for s in strategies[node.id])
                key = (info.shape, info.dtype.itemsize, srcs, dsts)
                if key not in seen:
                    size = [local_bytes(info.shape, info.dtype.itemsize, d, mesh) for d in dsts]
                    seen[key] = np.array([[0.0 if a == b else size[t] for t, b in enumerate(dsts)] for a in srcs])
                if seen[key].any():
                    out[e] = seen[key]
            e += 1
    return out


def _charge_fed_inputs(graph, strategies, cluster, mesh, costs: CostTables) -> None:
    """An argument that is not carried over from the last step (a batch) is fed anew each
    step and written to device memory once: a split layout writes less per device.
    Without this a replicated batch and a split one tie, since slicing is free."""
    carried = {a for a in graph.output_aliases if a is not None}
    for i, nid in enumerate(graph.input_nodes):
        if i in carried:
            continue
        info = graph.nodes[nid].outputs[0]
        costs.compute[nid] = costs.compute[nid] + np.array(
            [local_bytes(info.shape, info.dtype.itemsize, s.out_specs[0], mesh) / cluster.hbm_bandwidth
             for s in strategies[nid]]
        )


def _layouts(strategies, node: int, which: str, k: int, memo: dict) -> tuple:
    """The layout each strategy of ``node`` gives its output ``k`` (``which="out"``) or
    needs its operand ``k`` in (``"in"``). Repeated layers share strategy lists
    (strategies/per_node.py), so each list is read once."""
    key = (id(strategies[node]), which, k)
    if key not in memo:
        memo[key] = tuple((s.out_specs if which == "out" else s.in_specs)[k] for s in strategies[node])
    return memo[key]


def _dsts(strategies, dst: int, operand: int | None, memo: dict) -> tuple:
    """The layout each strategy of node ``dst`` needs its operand ``operand`` in
    (``None``: an argument node, whose layout is its output spec)."""
    return _layouts(strategies, dst, "out", 0, memo) if operand is None else \
        _layouts(strategies, dst, "in", operand, memo)


def _edge(graph, strategies, cluster, mesh, ref: ValueRef, dst: int, operand: int | None,
          seen: dict, memo: dict) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, of which on the device's memory) of every (producer, consumer) pair."""
    info = graph.nodes[ref.node].outputs[ref.index]
    srcs = _layouts(strategies, ref.node, "out", ref.index, memo)
    dsts = _dsts(strategies, dst, operand, memo)
    key = (info.shape, info.dtype.itemsize, srcs, dsts)  # repeated layers repeat their edges
    if key not in seen:
        links, local = reshard_matrices(cluster, mesh, info.shape, info.dtype.itemsize, srcs, dsts)
        seen[key] = (links + local, local)
    return seen[key]


def _node_name(node) -> str:
    """``12:dot_general float32[16, 64, 512]``; an argument by its path (for messages)."""
    what = node.label if node.kind is NodeKind.INPUT else node.primitive
    return f"{node.id}:{what} " + ", ".join(f"{o.dtype.name}{list(o.shape)}" for o in node.outputs)


def build_problem(
    graph: OpGraph,
    strategies: list[list[Strategy]],
    cluster: Cluster,
    mesh: MeshShape,
    memory_budget: float | None,
    follow: bool = True,
    combined_share: float = 1.0,
    edge_memo: dict | None = None,
    donated: frozenset[int] = frozenset(),
    copies_for: frozenset | None = frozenset(),
    gather_share: float | GatherPricing = 1.0,
) -> tuple[Problem, CostTables]:
    """``edge_memo``: reshard matrices by (shape, itemsize, layouts), and the last graph's
    priced nodes and edges per ``combined_share``; pass the same dict to rebuild a problem
    on the same mesh and cluster without recomputing them (any graph: the reshard
    matrices are shared, the rest is the last graph's).
    ``donated``: flat argument indices whose buffers the step's results reuse.
    ``copies_for``: (value key, layout) pairs whose readers share one copy (copy nodes
    after the graph's nodes, ``costs.copies``; see ``costs.copies``); None: every pair
    two readers could share; the others are charged a reshard per reading edge.
    ``gather_share``: what each reshard XLA's all-gather combiner merges pays
    (``costs.gathers.GatherPricing``, settled by ``gathers.settle``; a float: its ``share``)."""
    seen = {} if edge_memo is None else edge_memo
    # What does not depend on copies_for or the budget is kept in the memo for this graph
    # (the last one built; kept with it, so identity is a safe test): a rebuild at another
    # row budget (fit), a least-memory solve, or with copies added reuses it.
    mine = seen.get("graph")
    if mine is None or mine[0] is not graph or mine[1] is not strategies:
        mine = seen["graph"] = (graph, strategies, {})
    built = mine[2]
    # the memo may serve this cluster without overlap too (search.plan_graph plans again so)
    key = ("priced", combined_share, gather_share, follow, cluster.overlap_contention)
    if key not in built:
        # another gather pricing (the fixed point's next solve) re-prices only the combinable reshards
        base = ("priced", combined_share, follow, cluster.overlap_contention)
        if base not in built:
            built[base] = _priced(graph, strategies, cluster, mesh, follow, combined_share, seen, gather_share, built)
            built[key] = built[base][0]
        else:
            built[key] = _repriced(*built[base], gather_share)
    costs, follows, edges, edge_costs, edge_local, reads = built[key]
    costs = dataclasses.replace(costs, compute=list(costs.compute))  # _charge_fed_inputs replaces entries
    _charge_fed_inputs(graph, strategies, cluster, mesh, costs)
    key = ("memory", donated)
    if key not in built:
        built[key] = (_node_memory(graph, strategies, mesh, donated), _edge_memory(graph, strategies, mesh, edges))
    node_memory, edge_memory = built[key]
    if "names" not in built:
        built["names"] = [_node_name(n) for n in graph.nodes]
    shared = Edges(list(edges), list(edge_costs), list(edge_local), dict(edge_memory))  # share_copies rewrites
    copies = share_copies(len(graph.nodes), shared, reads, copies_for)
    none = [np.zeros(2) for _ in copies]  # a copy node's own costs: its edges carry them
    costs = dataclasses.replace(costs, compute=costs.compute + none, comm=costs.comm + none,
                                local=costs.local + none, edge_local=shared.local, copies=tuple(copies),
                                reads=tuple(reads))
    problem = Problem(
        node_costs=[c + m + lo for c, m, lo in zip(costs.compute, costs.comm, costs.local)],
        node_memory=node_memory + none,
        edge_memory=shared.memory,
        edges=np.array(shared.pairs, dtype=np.int64).reshape(-1, 2),
        edge_costs=shared.costs,
        memory_budget=memory_budget,
        follows=dict(follows),
        names=built["names"] + [_copy_name(graph, c) for c in copies],
    )
    return problem, costs


def _priced(graph: OpGraph, strategies, cluster: Cluster, mesh: MeshShape, follow: bool, combined_share: float,
            seen: dict, gather_share: float | GatherPricing = 1.0, built: dict | None = None):
    """Node costs, follows and the edges with their reshard prices and what each reads:
    (costs, follows, edge pairs, edge costs, edge local costs, reads), and the combinable
    reshards' edges for ``_repriced``; ``built``: this graph's memo (``node_costs``'s)."""
    costs = node_costs(graph, strategies, cluster, mesh, combined_share, built)
    edges, edge_costs, edge_local, reads = [], [], [], []
    follows = {}
    memo: dict = {}  # layouts per strategy list (_layouts), follow mappings (follow_mapping)
    follows_free: dict = {}  # (edge matrix, mapping) -> whether the follower reads it for free
    overlap = cluster.overlap_contention is not None
    if overlap:  # an argument's resharding (FSDP's gathers) runs under the compute before its reader
        ready, before = ready_at_start(graph, HEAVY, carried_args(graph)), earlier_compute(graph, costs.compute)
        light = ready_at_start(graph, HEAVY, set(range(len(graph.input_nodes))))  # the batch's too
        no_latency = cluster.with_latency_share(0.0)
        estimated = as_one_node(no_latency)
        backward_from = forward_end(graph)
    pricing = gather_share if isinstance(gather_share, GatherPricing) else GatherPricing(share=float(gather_share))
    hidden_reshards, hidden_edges = [], []  # (edge index, prices in full, follow mapping, read)
    if built is not None and "edges" in built:
        sources, edge_list = built["edges"]
    else:
        sources, edge_list = _edge_skeleton(graph, strategies, cluster, mesh, seen, memo)
        if built is not None:
            built["edges"] = sources, edge_list

    def add_edge(ref: ValueRef, v: int, operand: int | None, times: int, priced, dsts) -> None:
        full = None
        if overlap and operand is not None and times == 1 and ref.node in light and priced[0].any():
            # a reshard the all-gather combiner merges with the plan's others (costs.gathers)
            bandwidth, estimate = (_edge(graph, strategies, c, mesh, ref, v, operand, seen.setdefault(k, {}), memo)
                                   for c, k in ((no_latency, "bw"), (estimated, "est")))
            info, gathered = graph.info(ref), seen.setdefault("gathered", {})
            if (info.shape, info.dtype.itemsize, dsts) not in gathered:
                gathered[(info.shape, info.dtype.itemsize, dsts)] = np.array(
                    [local_bytes(info.shape, info.dtype.itemsize, d, mesh) for d in dsts], dtype=float)
            hidden_reshards.append(Combinable(
                ref.node, v, _layouts(strategies, ref.node, "out", ref.index, memo), dsts, priced[0] > priced[1],
                bandwidth[0] - bandwidth[1], estimate[0] - estimate[1], gathered[(info.shape, info.dtype.itemsize, dsts)],
                float(before[v]), ref.node in ready and v not in ready, cluster.overlap_contention, v > backward_from))
            full = priced
            priced = hidden_reshards[-1].priced(priced, pricing)
        edges.append((ref.node, v))
        for out, m in zip((edge_costs, edge_local), priced):
            out.append(m * times if times != 1 else m)
        follower = follows.get(v)
        free = False
        if follower is not None and follower[0] == ref.node:
            # both arrays are kept alive (seen, memo) while this runs: their ids stay unique
            k = (id(priced[0]), id(follower[1]))
            if k not in follows_free:
                follows_free[k] = not priced[0][np.arange(len(follower[1])), follower[1]].any()
            free = follows_free[k]
        read = Read((ref.node, ref.index, times), ref.node, v, dsts) if full is not None or not free else None
        reads.append(None if free else read)  # None: v follows the producer into its layout, reads no copy
        if full is not None:
            hidden_edges.append((len(edges) - 1, full, follower[1] if follower is not None
                                 and follower[0] == ref.node else None, read))

    if follow:  # (an edge into a node reads only that node's own mapping: all are made first)
        for node, source in zip(graph.nodes, sources):
            mapping = follow_mapping(graph, strategies, costs, node, memo, source) if source is not None else None
            if mapping is not None:
                follows[node.id] = mapping
    for entry in edge_list:
        add_edge(*entry)
    if cluster.gpu_target is not None:  # XLA's GPU AllReduceReassociate: two summed all-reduces run as one
        comm, merges = merge_edges(graph, strategies, costs.comm, off_critical_path(graph))
        # and XLA's combiner merges an all-reduce on the critical path with an independent one before it
        comm, combines = combine_edges(graph, strategies, cluster, mesh, comm, off_critical_path(graph))
        merges += combines
        costs = dataclasses.replace(costs, comm=comm)
        for u, v, matrix in merges:
            edges.append((u, v))
            edge_costs.append(matrix)
            edge_local.append(np.zeros_like(matrix))
            reads.append(None)  # no value moves on it
    costs = dataclasses.replace(costs, hidden_reshards=tuple(hidden_reshards))
    return (costs, follows, edges, edge_costs, edge_local, reads), hidden_edges


def _repriced(priced: tuple, hidden_edges: list, pricing: float | GatherPricing) -> tuple:
    """``_priced``'s tables with its combinable reshards priced by ``pricing`` instead (the
    rest does not depend on it): the same as ``_priced`` with ``pricing``, at a fraction."""
    costs, follows, edges, edge_costs, edge_local, reads = priced
    pricing = pricing if isinstance(pricing, GatherPricing) else GatherPricing(share=float(pricing))
    edge_costs, edge_local, reads = list(edge_costs), list(edge_local), list(reads)
    for (i, full, follower, read), combinable in zip(hidden_edges, costs.hidden_reshards):
        edge_costs[i], edge_local[i] = combinable.priced(full, pricing)
        free = follower is not None and not edge_costs[i][np.arange(len(follower)), follower].any()
        reads[i] = None if free else read
    return costs, follows, edges, edge_costs, edge_local, reads


def _edge_skeleton(graph: OpGraph, strategies, cluster: Cluster, mesh: MeshShape, seen: dict, memo: dict):
    """What of ``_priced`` depends on the graph and strategies alone (kept per graph: a
    rebuild at another latency share, or without overlap, reuses it): each node's
    ``follow_source``, and every Problem edge in order as (value, reader, operand
    position or None for a result returned into its argument, times paid, its reshard
    prices ``_edge``, the layouts the reader needs)."""
    edge_list = []

    def add(ref: ValueRef, v: int, operand: int | None, times: int = 1) -> None:
        edge_list.append((ref, v, operand, times, _edge(graph, strategies, cluster, mesh, ref, v, operand, seen, memo),
                          _dsts(strategies, v, operand, memo)))

    for node in graph.nodes:
        for j, ref in enumerate(node.inputs):
            if isinstance(ref, ValueRef):
                trips = max(graph.nodes[ref.node].trips, node.trips)  # paid in every iteration
                add(ref, node.id, j, trips)
    for ref, carry, times in graph.loop_backs():
        # The next carry is resharded into the carry's layout between iterations.
        add(ref, carry, 0, times)
    for out, arg in zip(graph.outputs, graph.output_aliases):
        if isinstance(out, ValueRef) and arg is not None:
            add(out, graph.input_nodes[arg], None)
    return [follow_source(graph, node) for node in graph.nodes], edge_list


def _copy_name(graph: OpGraph, copy: SharedCopy) -> str:
    """``copy of 12:dot_general float32[16, 64] into (('data',), ())`` (for messages)."""
    return f"copy of {_node_name(graph.nodes[copy.producer])} into {copy.layout}"
