"""The numeric problem the solver sees: numpy arrays only, no jax, serializable."""

from __future__ import annotations

import dataclasses

import numpy as np

from shardsearch.errors import ShardsearchError


class ProblemError(ShardsearchError, ValueError):
    """A Problem is malformed (shapes, indices, follows); the builder has a bug."""


@dataclasses.dataclass
class Problem:
    """Pick one strategy per node to minimize node costs plus edge (resharding) costs.

    node_costs[i]   shape (S_i,)        seconds of strategy s of node i (compute + its collectives)
    node_memory[i]  shape (S_i,)        bytes per device that strategy s keeps resident
    edges           shape (E, 2) int    (u, v) pairs; u < v is not required
    edge_costs[e]   shape (S_u, S_v)    seconds to move u's output into the layout v needs
    edge_memory     {e: shape (S_u, S_v)} bytes per device edge e's resharded copy adds
                    to the budget row when u and v take those strategies (a copy that
                    stays live at the step's peak); edges not in it add none
    memory_budget   bytes per device for the sum of chosen node and edge memory; None = unlimited
    follows         follows[v] = (u, mapping): v must take strategy mapping[s_u]
                    whenever u takes s_u (mapping has shape (S_u,)); used to merge
                    cheap unary ops into their producer before the ILP.
    names           a label per node, for messages only
    """

    node_costs: list[np.ndarray]
    node_memory: list[np.ndarray]
    edges: np.ndarray
    edge_costs: list[np.ndarray]
    memory_budget: float | None = None
    follows: dict[int, tuple[int, np.ndarray]] = dataclasses.field(default_factory=dict)
    names: list[str] | None = None
    edge_memory: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.node_costs)

    def label(self, i: int) -> str:
        return f"node {i} ({self.names[i]!r})" if self.names else f"node {i}"

    def validate(self) -> None:
        """Raise ProblemError naming the first inconsistent array; a builder bug otherwise
        surfaces deep inside the solver as an IndexError. Checked once per Problem (the
        solver and its reductions each ask; a deep model's check takes a fraction of a
        second): a Problem is not changed after it is built."""
        if self.__dict__.get("_validated"):
            return
        self._check()
        self.__dict__["_validated"] = True  # not a field: equality and replace() ignore it

    def without_budget(self) -> "Problem":
        """This problem with no memory budget (checked if this one was)."""
        out = dataclasses.replace(self, memory_budget=None)
        out.__dict__["_validated"] = self.__dict__.get("_validated", False)
        return out

    def _check(self) -> None:
        n = self.num_nodes
        if len(self.node_memory) != n:
            raise ProblemError(f"{n} node_costs but {len(self.node_memory)} node_memory entries")
        # Checked in bulk (a deep model has tens of thousands of nodes); the first
        # offender is looked for only when something is wrong.
        shapes = [np.shape(c) for c in self.node_costs]
        if shapes != [np.shape(m) for m in self.node_memory] or not all(len(c) == 1 and c[0] for c in shapes):
            i = next(i for i, (c, m) in enumerate(zip(self.node_costs, self.node_memory))
                     if np.ndim(c) != 1 or not len(c) or np.shape(m) != np.shape(c))
            raise ProblemError(f"{self.label(i)}: costs shape {np.shape(self.node_costs[i])}, memory shape "
                               f"{np.shape(self.node_memory[i])}; both must be (S,) with S >= 1")
        if n and not (np.isfinite(np.concatenate(self.node_costs)).all()
                      and np.isfinite(np.concatenate(self.node_memory)).all()):
            i = next(i for i in range(n) if not (np.isfinite(self.node_costs[i]).all()
                                                 and np.isfinite(self.node_memory[i]).all()))
            raise ProblemError(f"{self.label(i)}: costs or memory not finite; use a large "
                               "finite figure for a strategy that is merely bad")
        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        if len(edges) != len(self.edge_costs):
            raise ProblemError(f"{len(edges)} edges but {len(self.edge_costs)} edge_costs")
        outside = np.flatnonzero(((edges < 0) | (edges >= n)).any(axis=1))
        if len(outside):
            e = int(outside[0])
            raise ProblemError(f"edge {e} = ({edges[e][0]}, {edges[e][1]}) names a node outside 0..{n - 1}")
        sizes = [c[0] for c in shapes]
        # repeated layers share their matrices and mappings: check each once (by id: all
        # are held by this problem while it runs)
        checked: dict[int, tuple] = {}
        for e, (u, v, mat) in enumerate(zip(edges[:, 0].tolist(), edges[:, 1].tolist(), self.edge_costs)):
            got = checked.get(id(mat))
            if got is None:
                got = checked[id(mat)] = (np.shape(mat), bool(np.isfinite(mat).all()))
            if got[0] != (sizes[u], sizes[v]):
                raise ProblemError(f"edge {e} ({self.label(u)} -> {self.label(v)}): cost matrix "
                                   f"shape {got[0]}, expected {(int(sizes[u]), int(sizes[v]))}")
            if not got[1]:
                raise ProblemError(f"edge {e} ({self.label(u)} -> {self.label(v)}): cost not finite")
        for e, mm in self.edge_memory.items():
            if not 0 <= e < len(edges):
                raise ProblemError(f"edge_memory names edge {e} outside 0..{len(edges) - 1}")
            if np.shape(mm) != np.shape(self.edge_costs[e]) or not np.isfinite(mm).all():
                raise ProblemError(f"edge {e}: memory matrix shape {np.shape(mm)} (finite entries) expected "
                                   f"{np.shape(self.edge_costs[e])}")
        mappings: dict[tuple, bool] = {}
        for v, (u, mapping) in self.follows.items():
            if not (0 <= v < n and 0 <= u < n):
                raise ProblemError(f"follows[{v}] = ({u}, ...) names a node outside 0..{n - 1}")
            sv = sizes[v]
            key = (id(mapping), sizes[u], sv)
            if key not in mappings:
                m = np.asarray(mapping)
                in_range = m.size == 0 or (m.min() >= 0 and m.max() < sv)
                mappings[key] = m.shape == (sizes[u],) and bool(in_range)
            if not mappings[key]:
                mapping = np.asarray(mapping)
                raise ProblemError(f"follows[{v}]: mapping {mapping.tolist()} must have one entry "
                                   f"per strategy of {self.label(u)}, each in 0..{sv - 1}")
        if self.memory_budget is not None and not np.isfinite(self.memory_budget):
            raise ProblemError(f"memory_budget {self.memory_budget} is not finite; use None")


@dataclasses.dataclass(frozen=True)
class Solution:
    choice: np.ndarray  # (num_nodes,) int: chosen strategy index per node
    objective: float  # seconds, evaluated on the original problem
    bound: float  # best proven lower bound in seconds (== objective when optimal)
    status: str  # "OPTIMAL", "FEASIBLE", "INFEASIBLE", ...
    solve_s: float
    num_variables: int  # variables in the ILP actually solved (after reduction)
    num_constraints: int
    reduced_nodes: int  # nodes left after merging/elimination
    # seconds per byte at which the Lagrangian search priced memory (lagrange.py); None
    # when the budget did not bind. Pass it to the next solve of a similar problem.
    multiplier: float | None = None
