"""Trace a function to a jaxpr and flatten it into an OpGraph.

Call-like equations (jit, closed_call, custom_jvp/vjp, remat) are inlined so the
search sees the operators inside them. A ``scan`` is planned once: its body's
equations become nodes (run ``length`` times, see graph.Loop) between slice/carry
nodes and out/stack nodes, so a model whose layers are stacked under ``scan`` gets
the same per-operator plan as an unrolled one. A ``cond``'s branches are inlined, its
outputs merged (graph.Cond); a ``while``'s predicate and body are planned once
between carry and out nodes (graph.While).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jcore

from shardsearch.errors import ArgumentError, TraceError
from shardsearch.graph import (
    Cond, LiteralValue, Loop, NodeKind, OpGraph, OpNode, Remat, TensorInfo, ValueRef, While,
)
from shardsearch.trace.facts import facts

# Primitives whose body is inlined, and the param that holds the body.
_INLINE = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat": "jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "call": "call_jaxpr",
    "custom_vmap_call": "call",  # jax.custom_batching: the function itself, vmap rule aside
    "linear_call": "callee",  # jax.custom_derivatives.linear_call: the callee, transpose aside
    "remat_opt": "fwd_jaxpr",  # a custom_vjp's optimize_remat forward (residuals, outputs)
}


def _inlined(eqn, ins: list):
    """(body, its operands) of an equation whose value is its body's, else None."""
    name, p = eqn.primitive.name, eqn.params
    if name == "custom_linear_solve":  # jnp.linalg.solve: the value is the `solve` jaxpr's
        lengths = p["const_lengths"]
        start = lengths.matvec + lengths.vecmat
        return p["jaxprs"].solve, ins[start:start + lengths.solve] + ins[sum(lengths):]
    key = _INLINE.get(name)
    if key is None or key not in p:
        return None
    return p[key], ins

# Inlined for planning, but re-run inside jax.checkpoint (graph.Remat).
_REMAT = frozenset({"remat", "remat2", "checkpoint"})

# Constants at most this big become literals (no node); bigger ones become CONST nodes.
_LITERAL_MAX_ELEMENTS = 1

TRACE_FAILED = (
    "shardsearch could not trace {name} with the given arguments:\n  {err}\n"
    "The function must be jax-traceable (pure jax/numpy ops on its array arguments); "
    "pass arrays or jax.ShapeDtypeStruct leaves, and keep Python control flow off traced values."
)


BAD_LEAF = (
    "{name}: the argument at path {path} is a {kind} ({value}), which is not an array: {err}. "
    "Every argument leaf must be an array, a number or a jax.ShapeDtypeStruct (jax.jit says the "
    "same of the leaf at {jax_path}). Mark the argument static (static_argnums / static_argnames), "
    "or keep such values out of the arrays you pass"
)


def _jax_path(path: str, params: Sequence[str]) -> str:
    """``args[1]['label']`` as jax.jit names it, by parameter: ``batch['label']``."""
    index, _, rest = path.removeprefix("args[").partition("]")
    return params[int(index)] + rest if index.isdigit() and int(index) < len(params) else path


def _checked(dtype):
    """``dtype`` if jax arrays can have it (numbers, bools, PRNG keys), else a TypeError."""
    if any(jax.dtypes.issubdtype(dtype, kind) for kind in (np.number, np.bool_, jax.dtypes.extended)):
        return dtype
    raise TypeError(f"dtype {dtype} is not a valid JAX array type")


def abstract_args(args: Sequence[Any], *, name: str = "shardsearch", params: Sequence[str] = ()) -> tuple[Any, ...]:
    """Arrays, numpy values or ShapeDtypeStructs -> ShapeDtypeStructs (no allocation).

    A leaf that is no array (a string, an object) raises ``ArgumentError`` naming its
    path, ``args[2]['label']`` and, given the parameter names ``params``, ``batch['label']``."""

    def to_sds(path, x):
        try:
            if isinstance(x, jax.ShapeDtypeStruct):
                return jax.ShapeDtypeStruct(x.shape, x.dtype)
            if hasattr(x, "shape") and hasattr(x, "dtype"):
                return jax.ShapeDtypeStruct(tuple(x.shape), _checked(x.dtype))
            arr = np.asarray(x)
            return jax.ShapeDtypeStruct(arr.shape, jax.dtypes.canonicalize_dtype(_checked(arr.dtype)))
        except TypeError as err:
            where = "args" + jax.tree_util.keystr(path)
            raise ArgumentError(BAD_LEAF.format(
                name=name, path=where, kind=type(x).__name__, value=repr(x)[:40], err=err,
                jax_path=_jax_path(where, params))) from None

    return tuple(jax.tree_util.tree_map_with_path(to_sds, tuple(args)))


def _info(aval) -> TensorInfo:
    shape = tuple(int(d) for d in aval.shape)
    if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.extended):
        # PRNG keys (key<fry>) have no numpy dtype: an opaque record of their byte size
        return TensorInfo(shape, np.dtype(f"V{getattr(aval.dtype, 'itemsize', 8)}"))
    return TensorInfo(shape, np.dtype(aval.dtype))


def _source(eqn) -> str:
    from jax._src import source_info_util  # the one place we read jax internals

    try:
        return source_info_util.summarize(eqn.source_info)
    except Exception:  # best effort: a label only
        return ""


class _Builder:
    def __init__(self):
        self.nodes: list[OpNode] = []
        self.loops: list[Loop] = []
        self.remats: list[Remat] = []
        self.conds: list[Cond] = []
        self.whiles: list[While] = []
        self.trips = 1  # trip count of the loops being walked

    def add(self, kind, primitive, params, inputs, outputs, label="", payload=None) -> int:
        nid = len(self.nodes)
        self.nodes.append(OpNode(nid, kind, primitive, params, tuple(inputs), tuple(outputs), label, payload,
                                 self.trips))
        return nid

    def scan(self, eqn, ins: list) -> list:
        """A scan's body walked once, between its slice/carry and out/stack nodes."""
        p, body = eqn.params, eqn.params["jaxpr"]
        nc, nk, length = p["num_consts"], p["num_carry"], int(p["length"])
        invars, label = body.jaxpr.invars, _source(eqn)
        op = lambda prim, x, var: self.add(NodeKind.OP, prim, {"length": length}, [x], [_info(var.aval)], label)
        slices = tuple(op("scan_slice", x, v) for x, v in zip(ins[nc + nk:], invars[nc + nk:]))
        carries = tuple(op("scan_carry", k, v) for k, v in zip(ins[nc:nc + nk], invars[nc:nc + nk]))
        first = len(self.nodes)
        self.trips *= length
        outs = self.walk(body.jaxpr, body.consts, list(ins[:nc]) + [ValueRef(n) for n in carries + slices])
        self.trips //= length
        body_ids = tuple(range(first, len(self.nodes)))
        carry_out, ys = tuple(outs[:nk]), tuple(outs[nk:])
        finals = tuple(op("scan_out", c, v) for c, v in zip(carry_out, eqn.outvars[:nk]))
        stacks = tuple(op("scan_stack", y, v) for y, v in zip(ys, eqn.outvars[nk:]))
        self.loops.append(Loop(length, bool(p["reverse"]), p.get("unroll", 1), slices, carries, body_ids,
                               carry_out, ys, finals, stacks))
        return [ValueRef(n) for n in finals + stacks]

    def cond(self, eqn, ins: list) -> list:
        """Each branch walked on the cond's operands, then one merge node per output."""
        branches, results = [], []
        for branch in eqn.params["branches"]:
            first = len(self.nodes)
            results.append(tuple(self.walk(branch.jaxpr, branch.consts, ins[1:])))
            branches.append(tuple(range(first, len(self.nodes))))
        label, n = _source(eqn), len(branches)
        merges = tuple(self.add(NodeKind.OP, "cond_merge", {"branches": n}, [r[k] for r in results],
                                [_info(v.aval)], label) for k, v in enumerate(eqn.outvars))
        self.conds.append(Cond(ins[0], tuple(branches), tuple(results), merges))
        return [ValueRef(m) for m in merges]

    def while_loop(self, eqn, ins: list) -> list:
        """The predicate and the body walked once, between carry and out nodes."""
        p, label = eqn.params, _source(eqn)
        cond, body, nc, nb = p["cond_jaxpr"], p["body_jaxpr"], p["cond_nconsts"], p["body_nconsts"]
        carries = tuple(self.add(NodeKind.OP, "while_carry", {}, [x], [_info(v.aval)], label)
                        for x, v in zip(ins[nc + nb:], eqn.outvars))
        at_top = [ValueRef(c) for c in carries]
        first = len(self.nodes)
        (pred,) = self.walk(cond.jaxpr, cond.consts, list(ins[:nc]) + at_top)
        cond_ids = tuple(range(first, len(self.nodes)))
        first = len(self.nodes)
        carry_out = tuple(self.walk(body.jaxpr, body.consts, list(ins[nc:nc + nb]) + at_top))
        body_ids = tuple(range(first, len(self.nodes)))
        outs = tuple(self.add(NodeKind.OP, "while_out", {}, [ValueRef(c)], [_info(v.aval)], label)
                     for c, v in zip(carries, eqn.outvars))
        self.whiles.append(While(carries, cond_ids, pred, body_ids, carry_out, outs))
        return [ValueRef(n) for n in outs]

    def const(self, value) -> Any:
        arr = np.asarray(value) if not hasattr(value, "aval") else value
        info = TensorInfo(tuple(arr.shape), np.dtype(arr.dtype))
        if int(np.prod(info.shape)) <= _LITERAL_MAX_ELEMENTS:
            return LiteralValue(value, info)
        return ValueRef(self.add(NodeKind.CONST, "const", {}, (), (info,), "constant", value))

    def walk(self, jaxpr, consts, operands) -> list[Any]:
        """Add ``jaxpr``'s equations; return the operands of its outputs (eval_jaxpr style)."""
        env: dict[Any, Any] = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return LiteralValue(v.val, _info(v.aval))
            return env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = self.const(c)
        for v, x in zip(jaxpr.invars, operands):
            env[v] = x
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            inlined = _inlined(eqn, ins)
            if eqn.primitive.name == "scan" and int(eqn.params["length"]) >= 1:
                outs = self.scan(eqn, ins)
            elif eqn.primitive.name == "cond" and eqn.outvars:
                outs = self.cond(eqn, ins)
            elif eqn.primitive.name == "while" and eqn.outvars:
                outs = self.while_loop(eqn, ins)
            elif inlined is not None:
                body, ins = inlined
                first = len(self.nodes)
                if isinstance(body, jcore.ClosedJaxpr):
                    outs = self.walk(body.jaxpr, body.consts, ins)
                else:
                    outs = self.walk(body, (), ins)
                if eqn.primitive.name in _REMAT and len(self.nodes) > first:
                    self.remats.append(Remat(tuple(range(first, len(self.nodes))), tuple(ins), tuple(outs),
                                             bool(eqn.params.get("prevent_cse", True)), eqn.params.get("policy"),
                                             eqn))
            else:
                infos = [_info(v.aval) for v in eqn.outvars]
                params = {**eqn.params, **facts(eqn)}
                nid = self.add(NodeKind.OP, eqn.primitive.name, params, ins, infos, _source(eqn), eqn)
                outs = [ValueRef(nid, k) for k in range(len(infos))]
            for v, x in zip(eqn.outvars, outs):
                if not isinstance(v, jcore.DropVar):
                    env[v] = x
        return [read(v) for v in jaxpr.outvars]


def _without_refs(closed):
    """Mutable Refs made inside the step (jax.new_ref) discharged into plain values, as
    jax.jit does before lowering: the planner plans values, and the apply stage re-runs them."""
    from jax._src import core as jax_core  # the one place we read jax internals
    from jax._src.state.discharge import discharge_state

    if any(isinstance(e, jax_core.InternalMutableArrayEffect) for e in closed.jaxpr.effects):
        return discharge_state(closed)
    return closed


def trace(fn: Callable, args: Sequence[Any]) -> OpGraph:
    """``fn(*args)`` -> OpGraph. ``args`` may hold arrays or ShapeDtypeStructs."""
    sds = abstract_args(args)
    try:
        closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*sds)
    except Exception as err:  # re-raised with what to do about it
        name = getattr(fn, "__name__", repr(fn))
        raise TraceError(TRACE_FAILED.format(name=name, err=f"{type(err).__name__}: {err}")) from err
    closed = _without_refs(closed)

    leaves_with_paths, in_tree = jax.tree_util.tree_flatten_with_path(sds)
    out_leaves_with_paths, out_tree = jax.tree_util.tree_flatten_with_path(out_shapes)
    b = _Builder()
    input_nodes = []
    in_paths = []
    for (path, _), var in zip(leaves_with_paths, closed.jaxpr.invars):
        label = "args" + jax.tree_util.keystr(path)
        input_nodes.append(b.add(NodeKind.INPUT, "input", {}, (), (_info(var.aval),), label))
        in_paths.append(label)
    outs = b.walk(closed.jaxpr, closed.consts, [ValueRef(n) for n in input_nodes])
    out_paths = tuple("out" + jax.tree_util.keystr(p) for p, _ in out_leaves_with_paths)
    aliases = output_aliases(sds, out_shapes)
    return OpGraph(b.nodes, tuple(outs), tuple(input_nodes), tuple(in_paths), out_paths, in_tree, out_tree, aliases,
                   tuple(b.loops), tuple(b.remats), tuple(b.conds), tuple(b.whiles))


def output_aliases(args: tuple, out) -> tuple[int | None, ...]:
    """For each flat output leaf, the flat argument leaf it is the next value of.

    A train step returns new params / optimizer state with the same structure as an
    argument; those outputs should come back in the argument's layout (and may be
    donated into it). Each top-level output is matched to the first unused argument
    with the same tree structure, shapes and dtypes.
    """
    tops = list(out) if isinstance(out, (tuple, list)) else [out]
    sig = lambda t: (jax.tree_util.tree_structure(t), [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(t)])
    arg_sigs = [sig(a) for a in args]
    arg_offsets = np.cumsum([0] + [len(jax.tree_util.tree_leaves(a)) for a in args])
    used: set[int] = set()
    aliases: list[int | None] = []
    for t in tops:
        n = len(jax.tree_util.tree_leaves(t))
        s = sig(t)
        match = next((i for i, a in enumerate(arg_sigs) if i not in used and a == s and n > 0), None)
        if match is None:
            aliases += [None] * n
        else:
            used.add(match)
            aliases += [int(arg_offsets[match]) + k for k in range(n)]
    return tuple(aliases)


def program_hash(graph: OpGraph) -> str:
    """A stable hash of the program's structure (ops, params, shapes, edges).

    Hashes ``repr((kind, primitive, params, operand keys, outputs))`` per node; the reprs
    of literal values and of tensor infos, which repeat across a deep model's layers and
    are slow to print (numpy's array2string), are made once per distinct value."""
    h = hashlib.sha256()
    memo: dict = {}

    def once(key, make) -> str:
        if key not in memo:
            memo[key] = make()
        return memo[key]

    def operand(o) -> str:
        if isinstance(o, LiteralValue):
            value = np.asarray(o.value)
            key = ("lit", type(o.value), getattr(o.value, "weak_type", None), value.dtype.str, value.shape,
                   value.tobytes())
            text = once(key, lambda: repr(repr(o.value)))
            return f"('lit', {text}, {once(o.info, lambda: repr(o.info))})"
        return repr((o.node, o.index))

    for n in graph.nodes:
        params = sorted((k, _stable(v)) for k, v in n.params.items())
        outputs = _tuple_repr([once(i, lambda i=i: repr(i)) for i in n.outputs])
        text = f"({n.kind.value!r}, {n.primitive!r}, {params!r}, {_tuple_repr([operand(o) for o in n.inputs])}, {outputs})"
        h.update(text.encode())
    h.update(("[" + ", ".join(operand(o) for o in graph.outputs) + "]").encode())
    return h.hexdigest()[:16]


def _tuple_repr(items: list[str]) -> str:
    """What ``repr`` prints for a tuple whose items print as ``items``."""
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def retrace(fn: Callable, args: Sequence[Any]) -> tuple[OpGraph, str]:
    """The graph of ``fn(*args)`` and its program hash (to check a plan made before)."""
    graph = trace(fn, args)
    return graph, program_hash(graph)


def _stable(v) -> str:
    if isinstance(v, (jcore.ClosedJaxpr, jcore.Jaxpr)):
        return str(v)
    if callable(v):
        return getattr(v, "__name__", type(v).__name__)
    s = repr(v)
    return s if " at 0x" not in s else type(v).__name__


def _operand_key(o):
    if isinstance(o, LiteralValue):
        return ("lit", repr(o.value), o.info)
    return (o.node, o.index)

