"""jaxpr -> OpGraph. The only package that touches jax internals."""

from shardsearch.graph import LiteralValue, NodeKind, OpGraph, OpNode, TensorInfo, ValueRef
from shardsearch.trace.interpret import eval_graph
from shardsearch.trace.jaxpr import abstract_args, program_hash, retrace, trace

__all__ = [
    "LiteralValue",
    "NodeKind",
    "OpGraph",
    "OpNode",
    "TensorInfo",
    "ValueRef",
    "abstract_args",
    "eval_graph",
    "program_hash",
    "retrace",
    "trace",
]
