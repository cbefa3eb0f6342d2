"""Plans as code a user keeps: a PartitionSpec pytree to paste, or path-regex rules.

``plan.partition_spec_source(argnum)`` writes Python source of the argument's
PartitionSpec pytree. ``plan.sharding_rules(argnum)`` gives MaxText/EasyLM-style
``[(path_regex, PartitionSpec), ...]``; layers that share a layout share one rule
(``\\[\\d+\\]`` stands for any list index), so the rules also fit a deeper model.
``apply_rules(tree, rules, mesh)`` turns rules into a NamedSharding pytree:

    rules = plan.sharding_rules(0)
    params = jax.device_put(params, shardsearch.apply_rules(params, rules, mesh))
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec

from shardsearch.apply.mesh import as_auto_mesh, to_partition_spec
from shardsearch.errors import PlanError

NO_SUCH_ARGUMENT = (
    "argnum={argnum} names no argument with arrays in this plan (its arguments with arrays: {have}); "
    "pass one of those"
)
NEEDS_TREES = (
    "this plan was read from a file, which keeps flat paths but not the argument pytrees; "
    "rebuild them with plan.apply(fn).plan_for(*args).partition_spec_source({argnum}), "
    "or use plan.sharding_rules({argnum}) with shardsearch.apply_rules, which need no pytree"
)
UNSUPPORTED_NODE = (
    "cannot write argument {argnum} as source: {path} is a {kind}, not a dict, list, tuple, "
    "namedtuple or None; use plan.sharding_rules({argnum}) with shardsearch.apply_rules instead"
)
NO_RULE = (
    "apply_rules: no rule matches the leaf {path} (shape {shape}); add a rule whose regex "
    "fully matches that path, e.g. (r'.*', PartitionSpec()) last to replicate everything else"
)
BAD_RULE = "apply_rules: rule {rule!r} gives {path} (shape {shape}) the spec {spec}, but {why}; fix or reorder the rules"

_INDEX = re.compile(r"\\\[\d+\\\]")  # an escaped list index such as \[3\]
_WIDTH = 88


def _argument_leaves(plan, argnum: int) -> list[tuple[str, PartitionSpec]]:
    """(path inside argument ``argnum``, spec) of each of its leaves, in flatten order."""
    prefix = f"args[{argnum}]"
    leaves = [
        (path[len(prefix):], to_partition_spec(spec))
        for path, spec in zip(plan.in_paths, plan.flat_in_specs)
        if path.startswith(prefix)
    ]
    if not leaves:
        have = sorted({p[len("args["):].split("]")[0] for p in plan.in_paths}, key=int)
        raise PlanError(NO_SUCH_ARGUMENT.format(argnum=argnum, have=", ".join(have)))
    return leaves


def sharding_rules(plan, argnum: int = 0) -> list[tuple[str, PartitionSpec]]:
    """``[(regex, PartitionSpec)]`` fully matching each leaf's ``keystr`` path in argument ``argnum``.

    Leaves whose paths differ only in list indices share one rule when they share a
    layout; otherwise each gets an exact rule. No two rules match the same path.
    """
    groups: dict[str, list[tuple[int, str, PartitionSpec]]] = {}
    for i, (path, spec) in enumerate(_argument_leaves(plan, argnum)):
        groups.setdefault(_INDEX.sub(r"\\[\\d+\\]", re.escape(path)), []).append((i, path, spec))
    rules = []  # (position of the first leaf it covers, regex, spec): listed in flatten order
    for general, members in groups.items():
        if len({spec for _, _, spec in members}) == 1:
            rules.append((members[0][0], general, members[0][2]))
        else:
            rules += [(i, re.escape(path), spec) for i, path, spec in members]
    return [(rx, spec) for _, rx, spec in sorted(rules, key=lambda r: r[0])]


def _check(spec: PartitionSpec, shape: tuple[int, ...], mesh) -> str | None:
    """Why ``spec`` cannot lay out an array of ``shape`` on ``mesh`` (None when it can)."""
    if len(spec) > len(shape):
        return f"it has {len(spec)} entries and the array only {len(shape)} dimensions"
    used: list[str] = []
    for dim, entry in enumerate(spec):
        axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        for a in axes:
            if a not in mesh.shape:
                return f"the mesh has no axis {a!r} (axes: {', '.join(mesh.axis_names)})"
        used += axes
        devices = math.prod(mesh.shape[a] for a in axes)
        if shape[dim] % devices:
            return f"dimension {dim} (size {shape[dim]}) is not divisible by the {devices} devices of {axes}"
    if len(used) != len(set(used)):
        return "it uses a mesh axis twice"
    return None


def apply_rules(tree: Any, rules: Sequence[tuple[Any, PartitionSpec]], mesh) -> Any:
    """A pytree of ``NamedSharding`` for ``tree`` (arrays or ShapeDtypeStructs): each leaf
    gets the spec of the first rule whose regex fully matches its ``jax.tree_util.keystr``
    path. ``mesh``: a ``jax.sharding.Mesh`` or a shape tuple such as ``(2, 4)``."""
    mesh = as_auto_mesh(mesh)
    compiled = [(re.compile(rx) if isinstance(rx, str) else rx, PartitionSpec(*spec)) for rx, spec in rules]

    def one(key_path, leaf):
        path = jax.tree_util.keystr(key_path)
        shape = tuple(leaf.shape) if hasattr(leaf, "shape") else ()
        for rx, spec in compiled:
            if rx.fullmatch(path):
                why = _check(spec, shape, mesh)
                if why:
                    raise PlanError(BAD_RULE.format(rule=rx.pattern, path=path, shape=shape, spec=spec, why=why))
                return NamedSharding(mesh, spec)
        raise PlanError(NO_RULE.format(path=path, shape=shape))

    return jax.tree_util.tree_map_with_path(one, tree)


def _spec_source(spec: PartitionSpec) -> str:
    entries = [repr(e) if e is None or isinstance(e, str) else repr(tuple(e)) for e in spec]
    return f"P({', '.join(entries)})"


def _source(node, path: str, argnum: int, imports: set[str], indent: int) -> str:
    """Source of ``node``: one line when it fits, else one child per line."""
    if isinstance(node, PartitionSpec):
        return _spec_source(node)
    if node is None:
        return "None"
    if isinstance(node, tuple) and hasattr(type(node), "_fields"):  # namedtuple (optax states)
        cls = type(node)
        imports.add(f"from {cls.__module__} import {cls.__name__}")
        items = [(f"{f}=", getattr(node, f), f"{path}.{f}") for f in cls._fields]
        opening, closing = f"{cls.__name__}(", ")"
    elif type(node) is dict:
        if not all(isinstance(k, (str, int)) for k in node):
            raise PlanError(UNSUPPORTED_NODE.format(argnum=argnum, path=path or "the argument", kind="dict with non-literal keys"))
        items = [(f"{k!r}: ", v, f"{path}[{k!r}]") for k, v in node.items()]
        opening, closing = "{", "}"
    elif type(node) in (list, tuple):
        items = [("", v, f"{path}[{i}]") for i, v in enumerate(node)]
        opening, closing = ("[", "]") if type(node) is list else ("(", ",)" if len(node) == 1 else ")")
    else:
        raise PlanError(UNSUPPORTED_NODE.format(argnum=argnum, path=path or "the argument", kind=type(node).__name__))
    inner = [key + _source(v, p, argnum, imports, indent + 4) for key, v, p in items]
    flat = opening + ", ".join(inner) + closing
    if "\n" not in flat and indent + len(flat) <= _WIDTH:
        return flat
    pad = " " * (indent + 4)
    return opening + "\n" + "".join(f"{pad}{s},\n" for s in inner) + " " * indent + closing.lstrip(",")


def partition_spec_source(plan, argnum: int = 0, *, name: str = "specs") -> str:
    """Python source that assigns ``name`` the PartitionSpec pytree of argument ``argnum``."""
    _argument_leaves(plan, argnum)  # a clear error for an argument the plan lacks
    if plan.in_specs is None:
        raise PlanError(NEEDS_TREES.format(argnum=argnum))
    imports = {"from jax.sharding import PartitionSpec as P"}
    body = _source(plan.in_specs[argnum], "", argnum, imports, 0)
    return "\n".join(sorted(imports)) + f"\n\n{name} = {body}\n"
