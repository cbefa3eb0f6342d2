"""Exact reduction of a Problem before the ILP, and the way back.

Steps, in this order (each keeps the optimum, and `Reduction.expand` maps any choice of
the reduced problem to a full choice of the same cost):
  1. follows: a follower is folded into its (transitive) leader: costs, memory and
     edges re-indexed through the composed mapping.
  2. parallel edges are summed, self-edges go onto the node's diagonal, and an edge
     whose matrix is separable (a[s] + b[t], e.g. any edge of a 1-strategy node) is
     moved onto its two nodes' costs.
  3. nodes of degree 0, 1 or 2 are eliminated by dynamic programming (min over their
     strategy, argmin recorded), repeated until nothing changes. Only nodes whose
     memory does not depend on the strategy, and whose edges' memory (resharded copies,
     ``Problem.edge_memory``) does not either, qualify when a budget can bind, since the
     DP cannot see the budget.
A budget that even the most memory-hungry assignment meets is dropped first (exact), and
with it all memory. Edge memory is carried along with edge costs: summed over parallel
edges, its diagonal onto the node for a self-edge, and onto the two nodes when separable.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from .problem import Problem, ProblemError


@dataclasses.dataclass(frozen=True)
class Reduction:
    problem: Problem  # reduced: no follows, no self or parallel edges
    cost_offset: float  # seconds every assignment pays on top of `problem`'s cost
    memory_offset: float  # bytes taken out of the budget by eliminated nodes
    kept: np.ndarray  # original index of each reduced node, ascending
    num_original: int
    steps: tuple  # elimination records, replayed backwards by expand()
    followers: tuple  # (v, root, mapping root strategy -> v strategy)

    def expand(self, reduced_choice) -> np.ndarray:
        choice = np.full(self.num_original, -1, dtype=np.int64)
        choice[self.kept] = np.asarray(reduced_choice, dtype=np.int64).reshape(-1)
        for v, *rest in reversed(self.steps):
            if len(rest) == 1:  # isolated: fixed strategy
                choice[v] = rest[0]
            elif len(rest) == 2:  # leaf: argmin given its neighbour
                choice[v] = rest[1][choice[rest[0]]]
            else:  # degree 2: argmin given both neighbours
                u, w, arg = rest
                choice[v] = arg[choice[u], choice[w]]
        for v, root, mapping in self.followers:
            choice[v] = mapping[choice[root]]
        return choice


def resolve_follows(problem: Problem) -> tuple[list[int], list[np.ndarray | None]]:
    """Per node, its root leader and the map root strategy -> node strategy (None: itself)."""
    n = problem.num_nodes
    root, maps = list(range(n)), [None] * n
    state = [0] * n  # 0 unseen, 1 on the current path, 2 resolved
    # repeated layers share their mappings: compose each pair once, so their followers
    # share the composed map too (and reduce_problem folds each edge matrix once)
    composed: dict = {}
    for start in sorted(problem.follows):
        path, v = [], start
        while v in problem.follows and state[v] != 2:
            if state[v] == 1:
                cycle = " -> ".join(problem.label(p) for p in path + [v])
                raise ProblemError(f"follows form a cycle ({cycle}); a node cannot follow itself")
            state[v] = 1
            path.append(v)
            v = problem.follows[v][0]
        for p in reversed(path):  # v is resolved; walk back down the chain
            u, mapping = problem.follows[p]
            mapping = np.asarray(mapping, dtype=np.int64)
            if maps[u] is not None:
                key = (id(mapping), id(maps[u]))
                if key not in composed:  # (kept with both operands: their ids stay theirs)
                    composed[key] = (mapping, maps[u], mapping[maps[u]])
                mapping = composed[key][2]
            root[p], maps[p] = root[u], mapping
            state[p] = 2
    return root, maps


def min_memory(problem: Problem) -> float:
    """The least memory any follows-respecting assignment uses: with follows folded the
    nodes are independent in memory, so the per-root minima add up exactly. With edge
    memory, a lower bound (each edge at its own minimum, usually 0: no copy); the exact
    figure is a problem of its own (``lagrange.least_memory``)."""
    root, maps = resolve_follows(problem)
    mem = {}
    for v in range(problem.num_nodes):
        m = np.asarray(problem.node_memory[v], dtype=np.float64)
        r = root[v]
        mem[r] = mem.get(r, 0.0) + (m if maps[v] is None else m[maps[v]])
    return float(sum(m.min() for m in mem.values())) + sum(float(np.min(mm)) for mm in problem.edge_memory.values())


def _split(m: np.ndarray):
    """(a, b) with m[s, t] == a[s] + b[t] (b >= 0, a >= 0 when m is), or None."""
    t0 = int(np.argmin(m[0]))
    a, b = m[:, t0], m[0] - m[0, t0]
    resid = np.abs(m - a[:, None] - b[None, :]).max()
    return (a, b) if resid <= 1e-12 * max(float(np.abs(m).max()), 1e-300) else None


class _Graph:
    """Mutable working copy. adj[a][b] is the (S_a, S_b) matrix; adj[b][a] its transpose view;
    madj likewise for the edges whose memory depends on both ends' strategies."""

    def __init__(self, costs, mems):
        self.cost, self.mem = costs, mems
        self.splits: dict = {}  # id(matrix) -> (matrix, _split of it): repeated layers share matrices
        self.diagonals: dict = {}  # id(matrix) -> (matrix, its diagonal)
        self.adj: dict[int, dict[int, np.ndarray]] = {v: {} for v in costs}
        self.madj: dict[int, dict[int, np.ndarray]] = {v: {} for v in costs}
        self.queue: collections.deque[int] = collections.deque()
        self.queued: set[int] = set()

    def push(self, v: int) -> None:
        if v not in self.queued and v in self.adj:
            self.queued.add(v)
            self.queue.append(v)

    def add_edge(self, a: int, b: int, m: np.ndarray, mm: np.ndarray | None = None, shared: bool = False) -> None:
        """``mm``: the edge's memory matrix, if any; ``shared``: the matrices are the
        problem's own (other edges may hold the same objects), not made by the reduction."""
        if a == b:  # self-edge: only the diagonal can be chosen
            self.cost[a] = self.cost[a] + (self.diagonal(m) if shared else np.diag(m))
            if mm is not None:
                self.mem[a] = self.mem[a] + np.diag(mm)
            return
        old, old_mm = self.adj[a].get(b), self.madj[a].get(b)
        if old is not None:
            m = old + m
        if old_mm is not None:
            mm = old_mm if mm is None else old_mm + mm
        split = self.split if shared and old is None and old_mm is None else _split
        parts = split(m)
        mparts = (np.zeros(m.shape[0]), np.zeros(m.shape[1])) if mm is None else split(mm)
        if parts is None or mparts is None:
            self.adj[a][b], self.adj[b][a] = m, m.T
            if mm is not None:
                self.madj[a][b], self.madj[b][a] = mm, mm.T
        else:
            self.cost[a] = self.cost[a] + parts[0]
            self.cost[b] = self.cost[b] + parts[1]
            self.mem[a] = self.mem[a] + mparts[0]
            self.mem[b] = self.mem[b] + mparts[1]
            for adj in (self.adj, self.madj):
                adj[a].pop(b, None)
                adj[b].pop(a, None)
        self.push(a)
        self.push(b)

    def diagonal(self, m: np.ndarray) -> np.ndarray:
        """``np.diag(m)``, once per matrix object (kept alive here, as ``split``'s)."""
        hit = self.diagonals.get(id(m))
        if hit is None:
            hit = self.diagonals[id(m)] = (m, np.diag(m))
        return hit[1]

    def split(self, m: np.ndarray):
        """``_split(m)``, once per matrix object (kept alive here, so its id stays unique)."""
        hit = self.splits.get(id(m))
        if hit is None:
            hit = self.splits[id(m)] = (m, _split(m))
        return hit[1]

    def remove(self, v: int) -> list[int]:
        nbrs = list(self.adj.pop(v))
        for u in nbrs:
            del self.adj[u][v]
            self.madj[u].pop(v, None)
            self.push(u)
        self.madj.pop(v)
        return nbrs

    def fixed_memory(self, v: int) -> float | None:
        """v's memory, edges' included, if no strategy of it or its neighbours changes it."""
        mem = self.mem[v]
        if not np.all(mem == mem[0]) or any(not np.all(mm == mm.flat[0]) for mm in self.madj[v].values()):
            return None
        return float(mem[0]) + sum(float(mm.flat[0]) for mm in self.madj[v].values())


def reduce_problem(problem: Problem) -> Reduction:
    """Apply the exact reductions above; deterministic (same problem, same result)."""
    problem.validate()
    n = problem.num_nodes
    root, maps = resolve_follows(problem)
    costs, mems = {}, {}
    for v in range(n):  # roots first, so followers have something to add onto
        if root[v] == v:
            costs[v] = np.array(problem.node_costs[v], dtype=np.float64)
            mems[v] = np.array(problem.node_memory[v], dtype=np.float64)
    followers = []
    for v in range(n):
        if root[v] != v:
            costs[root[v]] += np.asarray(problem.node_costs[v], dtype=np.float64)[maps[v]]
            mems[root[v]] += np.asarray(problem.node_memory[v], dtype=np.float64)[maps[v]]
            followers.append((v, root[v], maps[v]))

    budget = problem.memory_budget
    most = sum(m.max() for m in mems.values()) + sum(float(np.max(mm)) for mm in problem.edge_memory.values())
    if budget is not None and most <= budget:
        budget = None  # no assignment can exceed it

    fold_memo: dict = {}  # repeated layers share matrices and follow mappings: fold each once

    def folded(a: int, b: int, m) -> np.ndarray:
        key = (id(m), id(maps[a]), id(maps[b]))  # all alive while this runs (problem, maps)
        if key not in fold_memo:
            f = np.asarray(m, dtype=np.float64)
            if maps[a] is not None:
                f = f[maps[a], :]
            if maps[b] is not None:
                f = f[:, maps[b]]
            fold_memo[key] = f
        return fold_memo[key]

    g = _Graph(costs, mems)
    edges = np.asarray(problem.edges, dtype=np.int64).reshape(-1, 2)
    for e, (a, b) in enumerate(edges):
        mm = problem.edge_memory.get(e) if budget is not None else None  # memory matters only under a budget
        g.add_edge(root[a], root[b], folded(a, b, problem.edge_costs[e]),
                   None if mm is None else folded(a, b, mm), shared=True)

    g.queue.clear()
    g.queued.clear()
    for v in sorted(g.adj):
        g.push(v)
    steps, offset, mem_offset = [], 0.0, 0.0
    while g.queue:
        v = g.queue.popleft()
        g.queued.discard(v)
        if v not in g.adj or len(g.adj[v]) > 2:
            continue
        fixed = g.fixed_memory(v)
        if budget is not None and fixed is None:
            continue  # its strategy matters to the budget: leave it to the ILP
        mem_offset += fixed or 0.0
        cost, nbrs = g.cost[v], list(g.adj[v])
        if not nbrs:
            s = int(np.argmin(cost))
            offset += float(cost[s])
            steps.append((v, s))
        elif len(nbrs) == 1:
            (u,) = nbrs
            tot = cost[:, None] + g.adj[v][u]  # (S_v, S_u)
            arg = np.argmin(tot, axis=0)
            g.cost[u] = g.cost[u] + tot.min(axis=0)
            steps.append((v, u, arg))
        else:
            u, w = nbrs
            tot = g.adj[u][v][:, :, None] + cost[None, :, None] + g.adj[v][w][None, :, :]
            arg = np.argmin(tot, axis=1)  # (S_u, S_w)
            steps.append((v, u, w, arg))
            g.remove(v)
            g.add_edge(u, w, tot.min(axis=1))  # v's edge memory was constant: in mem_offset
            continue
        g.remove(v)

    kept = sorted(g.adj)
    index = {v: i for i, v in enumerate(kept)}
    red_edges, red_costs, red_memory = [], [], {}
    for a in kept:
        for b in sorted(b for b in g.adj[a] if b > a):
            if b in g.madj[a]:
                red_memory[len(red_edges)] = g.madj[a][b]
            red_edges.append((index[a], index[b]))
            red_costs.append(g.adj[a][b])
    reduced = Problem(
        node_costs=[g.cost[v] for v in kept],
        node_memory=[g.mem[v] for v in kept],
        edges=np.array(red_edges, dtype=np.int64).reshape(-1, 2),
        edge_costs=red_costs,
        memory_budget=None if budget is None else budget - mem_offset,
        names=[problem.names[v] for v in kept] if problem.names else None,
        edge_memory=red_memory,
    )
    return Reduction(reduced, offset, mem_offset if budget is not None else 0.0,
                     np.array(kept, dtype=np.int64), n, tuple(steps), tuple(followers))
