"""How a call ``step(*args, **kwargs)`` becomes the positional arrays the plan is for,
with ``jax.jit``'s conventions: ``static_argnums`` / ``static_argnames`` (hashable values
baked into the traced program, one plan per value) and ``donate_argnums`` /
``donate_argnames``.

A static argument keeps its position as ``None`` (an empty pytree) in the dynamic
argument tuple, so argument paths (``args[1]['w']``), pins and donation indices mean
the same with or without static arguments. Keyword arguments bind to their positions
through the function's signature; dynamic keyword-only ones travel as one trailing dict.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

from shardsearch.errors import OptionError

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

STATIC_OUT_OF_RANGE = (
    "{name} has static_argnums={nums} but accepts only {count} positional arguments; "
    "pass the positions of its static parameters (0 is the first)"
)
UNKNOWN_ARGNAMES = (
    "{name} has no parameter(s) {names} given in {option}; its parameters are {params}. "
    "Check the spelling"
)
UNHASHABLE_STATIC = (
    "static argument {where} of {name} is a {kind}, which is not hashable: {err}. Static "
    "arguments key the plan (as with jax.jit(static_argnums=...)); pass a hashable value "
    "(a tuple, a frozen dataclass, a number or a string), or make it a dynamic array argument"
)
KEYWORDS_WITHOUT_SIGNATURE = (
    "{name} was called with keyword arguments {names}, but its signature cannot be read, so "
    "they cannot be matched to positions; pass them positionally"
)


def _as_tuple(value, kind) -> tuple:
    if value is None:
        return ()
    if isinstance(value, kind):
        return (value,)
    return tuple(value)


def _signature(fn: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some C callables
        return None


@dataclasses.dataclass(frozen=True)
class Bound:
    """One call, split: ``dynamic`` holds the arrays (``None`` where an argument is
    static), ``static_key`` the static values (hashable), ``fn`` the function of the
    dynamic arguments alone."""

    dynamic: tuple
    static_key: tuple
    fn: Callable


@dataclasses.dataclass(frozen=True)
class CallingConvention:
    name: str
    static_argnums: tuple[int, ...]
    static_argnames: tuple[str, ...]
    donate_argnums: tuple[int, ...]
    params: tuple[str, ...]  # positional parameter names, for jax-style leaf paths

    @classmethod
    def of(cls, fn: Callable, *, static_argnums=(), static_argnames=(), donate_argnums=(),
           donate_argnames=()) -> "CallingConvention":
        """Read ``fn``'s signature and complete each static/donated set from the other,
        as ``jax.jit`` does (a static position names its parameter and vice versa)."""
        name = getattr(fn, "__name__", repr(fn))
        nums, names = _as_tuple(static_argnums, int), _as_tuple(static_argnames, str)
        donate, donate_names = _as_tuple(donate_argnums, int), _as_tuple(donate_argnames, str)
        sig = _signature(fn)
        if sig is None:
            return cls(name, nums, names, donate, ())
        params = list(sig.parameters.values())
        positional = [p.name for p in params if p.kind in _POSITIONAL]
        varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
        varkw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        if not varargs and any(not -len(positional) <= n < len(positional) for n in nums):
            raise OptionError(STATIC_OUT_OF_RANGE.format(name=name, nums=nums, count=len(positional)))
        known = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
        for option, given in (("static_argnames", names), ("donate_argnames", donate_names)):
            unknown = sorted(set(given) - known)
            if unknown and not varkw:
                raise OptionError(UNKNOWN_ARGNAMES.format(name=name, names=unknown, option=option,
                                                          params=[p.name for p in params]))
        nums = tuple(sorted({n % len(positional) if positional and n < 0 else n for n in nums}
                            | {positional.index(s) for s in names if s in positional}))
        names = tuple(sorted(set(names) | {positional[n] for n in nums if n < len(positional)}))
        donate = tuple(sorted(set(donate) | {positional.index(s) for s in donate_names if s in positional}))
        return cls(name, nums, names, donate, tuple(positional))

    def bind(self, fn: Callable, args: tuple, kwargs: dict) -> Bound:
        if kwargs:
            sig = _signature(fn)
            if sig is None:
                raise OptionError(KEYWORDS_WITHOUT_SIGNATURE.format(name=self.name, names=sorted(kwargs)))
            bound = sig.bind(*args, **kwargs)  # a TypeError naming the bad argument, as calling fn would
            args, kwargs = tuple(bound.args), dict(bound.kwargs)
        static_pos = {n % len(args) if n < 0 else n for n in self.static_argnums if -len(args) <= n < len(args)}
        static_kw = {k: v for k, v in kwargs.items() if k in self.static_argnames}
        dynamic_kw = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        dynamic = tuple(None if i in static_pos else a for i, a in enumerate(args))
        if dynamic_kw:
            dynamic += (dynamic_kw,)
        static_values = [(i, args[i]) for i in sorted(static_pos)] + sorted(static_kw.items())
        for where, value in static_values:
            try:
                hash(value)
            except TypeError as err:
                label = f"{where} ({self.params[where]})" if isinstance(where, int) and where < len(self.params) \
                    else repr(where)
                raise OptionError(UNHASHABLE_STATIC.format(where=label, name=self.name, kind=type(value).__name__,
                                                           err=err)) from None
        if not static_values and not dynamic_kw:
            return Bound(dynamic, (), fn)
        count = len(args)

        def call(*dyn):
            positional = [args[i] if i in static_pos else dyn[i] for i in range(count)]
            keywords = {**(dyn[count] if dynamic_kw else {}), **static_kw}
            return fn(*positional, **keywords)

        call.__name__ = self.name
        return Bound(dynamic, (tuple(static_values), tuple(sorted(dynamic_kw))), call)
