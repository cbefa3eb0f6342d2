"""Small dots that share an operand are priced as the one dot XLA merges them into
(shardsearch/costs/dot_merge.py)."""

import jax
import jax.numpy as jnp
import shardsearch as ss
from shardsearch.costs import dot_merge
from shardsearch.trace import trace


def three_heads(ws, x):
    """Three projections of one input (Q, K, V), and a weight read twice in a chain."""
    def loss(ws):
        q, k, v, w = ws
        chained = jnp.tanh(x @ w) @ w  # the second dot reads the first one's result
        return jnp.tanh(x @ q).sum() + jnp.tanh(x @ k).sum() + jnp.tanh(x @ v).sum() + chained.sum()

    return jax.grad(loss)(ws)


ARGS = ([jax.ShapeDtypeStruct((64, 64), jnp.float32) for _ in range(4)], jax.ShapeDtypeStruct((32, 64), jnp.float32))


def test_independent_dots_of_one_operand_merge_and_a_chain_does_not():
    graph = trace(three_heads, ARGS)
    merged = dot_merge.merged_dots(graph)
    dots = [n for n in graph.nodes if n.primitive == "dot_general"]
    x = graph.input_nodes[-1]
    forward = [n.id for n in dots if n.inputs[0].node == x and n.inputs[1].node in graph.input_nodes]
    assert len(forward) == 4 and all(merged.get(n) == 4 for n in forward)  # x @ q, k, v and w
    # tanh(x @ w) @ w reads w as x @ w does, but depends on it
    (second,) = [n.id for n in dots if n.inputs[1].node == graph.input_nodes[3]
                 and graph.nodes[n.inputs[0].node].primitive == "tanh"]
    assert second not in merged


def test_merged_dots_pay_one_fixed_cost(monkeypatch):
    merged = ss.plan(three_heads, *ARGS, mesh=(8,), cluster="h100-8", cache=False)
    monkeypatch.setattr(dot_merge, "THRESHOLD_BYTES", -1)  # nothing merges
    apart = ss.plan(three_heads, *ARGS, mesh=(8,), cluster="h100-8", cache=False)
    assert merged.predicted.compute_s < apart.predicted.compute_s
    # the forward's four dots of x and four of their weight gradients: at least three fixed
    # costs saved (about 3 us each on the preset's efficiency curve)
    assert apart.predicted.compute_s - merged.predicted.compute_s >= 3 * 2e-6
