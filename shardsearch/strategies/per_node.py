"""The strategies stage: candidate strategies for every node of an OpGraph."""

from __future__ import annotations

import dataclasses

from cost_model import MeshShape
from cost_model.mesh import replicated, spec_str
from shardsearch.graph import NodeKind, OpGraph, OpNode
from shardsearch.strategies.base import OpView, Strategy, has_rule
from shardsearch.strategies.registry import strategies_for
from shardsearch.strategies.specs import enumerate_specs


@dataclasses.dataclass(frozen=True)
class GraphStrategies:
    per_node: list[list[Strategy]]
    fallback: frozenset[int]  # OP nodes with no rule: replicated only


def _op_view(graph: OpGraph, node: OpNode) -> OpView:
    infos = [graph.info(r) for r in node.inputs]
    return OpView(
        primitive=node.primitive,
        params=node.params,
        in_shapes=tuple(i.shape for i in infos),
        in_dtypes=tuple(i.dtype for i in infos),
        out_shapes=tuple(o.shape for o in node.outputs),
        out_dtypes=tuple(o.dtype for o in node.outputs),
    )


def _layout_choices(shape, mesh: MeshShape, kind: NodeKind) -> list[Strategy]:
    """An argument may take any layout; a captured constant stays replicated."""
    specs = enumerate_specs(shape, mesh) if kind is NodeKind.INPUT else [replicated(len(shape))]
    return [Strategy(name=spec_str(s), in_specs=(), out_specs=(s,)) for s in specs]


def _cache_key(view: OpView):
    try:
        params = tuple(sorted((k, repr(v)) for k, v in view.params.items()))
    except Exception:  # params we cannot key on: do not cache
        return None
    return (view.primitive, params, view.in_shapes, view.in_dtypes, view.out_shapes, view.out_dtypes)


def graph_strategies(graph: OpGraph, mesh: MeshShape) -> GraphStrategies:
    per_node: list[list[Strategy]] = []
    fallback = set()
    cache: dict = {}
    for node in graph.nodes:
        if node.kind is not NodeKind.OP:
            per_node.append(_layout_choices(node.outputs[0].shape, mesh, node.kind))
            continue
        view = _op_view(graph, node)
        key = _cache_key(view) if has_rule(node.primitive) else None
        hit = cache.get(key) if key is not None else None
        if hit is None:
            hit = strategies_for(view, mesh)
            if key is not None:
                cache[key] = hit
        strats, ruled = hit
        per_node.append(strats)
        if not ruled:
            fallback.add(node.id)
    return GraphStrategies(per_node, frozenset(fallback))
