"""program_hash prints each distinct literal and tensor info once; the hash must stay the
one saved plans were checked against: the sha256 of repr((kind, primitive, params,
operand keys, outputs)) per node."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import pytest

from models import CASES
from shardsearch.graph import LiteralValue
from shardsearch.trace import program_hash, trace
from shardsearch.trace.jaxpr import _stable


def _reference(graph) -> str:
    def key(o):
        return ("lit", repr(o.value), o.info) if isinstance(o, LiteralValue) else (o.node, o.index)

    h = hashlib.sha256()
    for n in graph.nodes:
        params = sorted((k, _stable(v)) for k, v in n.params.items())
        h.update(repr((n.kind.value, n.primitive, params, tuple(key(o) for o in n.inputs), n.outputs)).encode())
    h.update(repr([key(o) for o in graph.outputs]).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("model", ["moe", "gpt"])  # moe: a weak-typed and a strong literal of one value
def test_hash_is_the_reference_hash(model):
    case = CASES[model]()
    graph = trace(case.train_step, case.args)
    assert program_hash(graph) == _reference(graph)


def test_literals_that_print_differently_hash_differently():
    x = jnp.ones((3,))
    weak = trace(lambda x: x * 8.0, (x,))
    strong = trace(lambda x: x * jnp.float32(8.0), (x,))
    assert program_hash(weak) == _reference(weak) and program_hash(strong) == _reference(strong)
    one_input = trace(lambda x: (x, jax.numpy.int32(1)), (x,))
    assert program_hash(one_input) == _reference(one_input)
