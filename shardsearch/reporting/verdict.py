"""The plan in words: which parallelism, over which mesh axes, for which parameters, and why.

Read off the layouts alone, in the usual terms:

- an axis that splits the inputs' leading (batch) dim is *data parallel*;
- an axis that also splits parameters is *FSDP (ZeRO-3)* (parameters sharded over the
  data-parallel devices, gathered for use); one that splits only the optimizer state is
  *ZeRO-1* (optimizer state sharded);
- an axis that splits parameters but not the batch is *tensor parallel*; *Megatron*
  when two-dim kernels are split both by column (output dim) and by row (input dim);
- a split of a stacked-expert weight's leading dim (three dims or more) is *expert
  parallel*; a split of the inputs' second dim (token ids, or inputs of three dims or
  more) is *sequence parallel*.

Others add sentences through ``VERDICT_RULES`` (a rule registry: plan -> sentence or None).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Callable

from shardsearch.compare.baselines import INPUT, OPT_STATE, PARAM
from shardsearch.reporting.format import fmt_s


@dataclasses.dataclass(frozen=True)
class Parallelism:
    """Mesh axes by the role the plan gives them (see the module notes)."""

    data: tuple[str, ...]
    fsdp: tuple[str, ...]
    zero1: tuple[str, ...]
    tensor: tuple[str, ...]
    expert: tuple[str, ...]
    sequence: tuple[str, ...]
    megatron: bool  # kernels split both by column and by row
    column: int  # two-dim kernels split on their output dim
    row: int  # ... on their input dim
    kernel_axes: tuple[str, ...] = ()  # the axes those column / row splits use


def _ordered(axes, mesh) -> tuple[str, ...]:
    return tuple(a for a in mesh.axis_names if a in axes)


def _leaves(plan, role):
    shapes = [a[0] if a else None for a in (plan.in_avals or ((),) * len(plan.in_paths))]
    dtypes = [a[1] if a else "" for a in (plan.in_avals or ((),) * len(plan.in_paths))]
    return [(p, s, shape, dt) for p, s, r, shape, dt in zip(plan.in_paths, plan.flat_in_specs, plan.in_roles, shapes,
                                                             dtypes) if r == role]


def parallelism(plan) -> Parallelism:
    mesh = plan.mesh
    data, seq, fsdp, zero1, tensor, expert = set(), set(), set(), set(), set(), set()
    for _, spec, shape, dtype in _leaves(plan, INPUT):
        if len(spec) >= 1:
            data.update(spec[0])
        if len(spec) >= 2 and (dtype.startswith(("int", "uint")) or len(spec) >= 3):
            seq.update(spec[1])
    column = row = 0
    param_axes, kernel_axes = set(), set()
    for _, spec, shape, _ in _leaves(plan, PARAM):
        for d, axes in enumerate(spec):
            for a in axes:
                param_axes.add(a)
                if a in data:
                    fsdp.add(a)
                elif d == 0 and len(spec) >= 3:
                    expert.add(a)
                else:
                    tensor.add(a)
        if len(spec) == 2 and bool(spec[0]) != bool(spec[1]):  # split by column or by row
            column += bool(spec[1])
            row += bool(spec[0])
            kernel_axes.update(spec[0] + spec[1])
    for _, spec, _, _ in _leaves(plan, OPT_STATE):
        zero1.update(a for axes in spec for a in axes if a in data and a not in param_axes)
    return Parallelism(
        data=_ordered(data, mesh), fsdp=_ordered(fsdp, mesh), zero1=_ordered(zero1, mesh),
        tensor=_ordered(tensor - expert, mesh), expert=_ordered(expert, mesh), sequence=_ordered(seq, mesh),
        megatron=column > 0 and row > 0, column=column, row=row, kernel_axes=_ordered(kernel_axes, mesh),
    )


def _over(axes, mesh) -> str:
    devices = mesh.group_size(axes) if axes else 1
    return f"over {'+'.join(axes)} ({devices} devices)"


def headline(plan) -> str:
    """One sentence: the parallelism in standard terms, over which axes."""
    mesh, par = plan.mesh, parallelism(plan)
    parts = []
    if par.data:
        dp = "data parallel " + _over(par.data, mesh)
        if par.fsdp:
            params = _leaves(plan, PARAM)
            n = sum(1 for _, spec, _, _ in params if any(a in par.fsdp for d in spec for a in d))
            which = "parameters" if n == len(params) else f"{n} of {len(params)} parameter arrays"
            dp += f" with FSDP (ZeRO-3): {which} sharded {_over(par.fsdp, mesh)}, gathered for use"
        elif par.zero1:
            dp += f" with ZeRO-1: optimizer state sharded {_over(par.zero1, mesh)}"
        parts.append(dp)
    if par.tensor:
        kind = "Megatron tensor parallel" if par.megatron else "tensor parallel"
        parts.append(f"{kind} {_over(par.tensor, mesh)}")
    kernels = ""
    if par.megatron and not par.tensor:  # on axes that also split the batch
        kernels = (f" Kernels are split Megatron-style, {par.column} by column and {par.row} by row, "
                   f"{_over(par.kernel_axes, mesh)}.")
    if par.expert:
        parts.append(f"expert parallel {_over(par.expert, mesh)}")
    if par.sequence:
        parts.append(f"sequence parallel {_over(par.sequence, mesh)}")
    if not parts:
        used = {a for s in plan.flat_in_specs for d in s for a in d}
        if not used:
            return "Replicated: every device runs the whole step on the whole batch (no split pays on this cluster)."
        return f"Arguments split over {'+'.join(_ordered(used, mesh))} (no standard recipe fits this layout)."
    text = " x ".join(parts)
    return text[0].upper() + text[1:] + "." + kernels


def group_name(path: str) -> str:
    """``args[0][3]['w']`` -> ``args[0][*]['w']``: layers of a stack read as one group (the
    argument's own index stays)."""
    head = re.match(r"args\[\d+\]", path)
    cut = head.end() if head else 0
    return path[:cut] + re.sub(r"\[\d+\]", "[*]", path[cut:])


def _layout_words(spec) -> str:
    if not any(spec):
        return "replicated"
    if len(spec) == 1:
        return f"split over {'+'.join(spec[0])}"
    if len(spec) == 2 and spec[1] and not spec[0]:
        return f"split by column over {'+'.join(spec[1])}"
    if len(spec) == 2 and spec[0] and not spec[1]:
        return f"split by row over {'+'.join(spec[0])}"
    dims = [f"dim {d} over {'+'.join(a)}" for d, a in enumerate(spec) if a]
    return "split on " + ", ".join(dims)


def _short(path: str, fold: bool = True) -> str:
    """``args[0]['Block_0']['Dense_0']['kernel']`` -> ``Block_0/Dense_0/kernel`` (with
    ``fold``, a stack's layer indices read ``*``)."""
    name = (group_name(path) if fold else path).removesuffix(".value")  # flax NNX variables
    name = re.sub(r"^args\[\d+\]", "", name)
    parts = re.findall(r"\['([^']*)'\]|\.(\w+)|\[(\*|\d+)\]", name)
    return "/".join(a or b or c for a, b, c in parts) or path


def parameter_groups(plan, limit: int = 5, examples: int = 3) -> list[str]:
    """``4 split by column over model (Block_*/Dense_0/kernel, ...)``: the parameters by
    layout, most arrays first, with a few of their names (layers of a stack as ``*``)."""
    by_layout: dict[str, list[str]] = {}
    for path, spec, _, _ in _leaves(plan, PARAM):
        by_layout.setdefault(_layout_words(spec), []).append(_short(path))
    rows = sorted(by_layout.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    lines = []
    for words, names in rows[:limit]:
        distinct = list(dict.fromkeys(names))
        shown = ", ".join(distinct[:examples]) + (", ..." if len(distinct) > examples else "")
        lines.append(f"{len(names)} {words} ({shown})")
    if len(rows) > limit:
        lines.append(f"{sum(len(n) for _, n in rows[limit:])} more in {len(rows) - limit} other layouts")
    return lines


def why(plan) -> str | None:
    """The plan's predicted step next to the recipes' (``plan.alternatives()``)."""
    alts = plan.alternatives()
    if not alts:
        return None
    total = plan.predicted.total_s
    same = [a.name for a in alts if abs(a.total_s - total) <= 1e-6 * max(total, 1e-12)]
    parts = [f"{a.name} {fmt_s(a.total_s)} ({a.total_s / total:.2f}x{'' if a.fits else ', over the memory budget'})"
             for a in alts] if total > 0 else []
    text = f"Why: predicted {fmt_s(total)} per step; on the same model and cluster " + ", ".join(parts) + "."
    if same:
        text += f" ({' and '.join(same)} costs the same: the search found nothing better than the recipe.)"
    return text


def remat(plan) -> str | None:
    chosen = getattr(plan, "remat", None)
    if chosen is not None:
        return (f"Remat (chosen to fit the memory budget): {chosen.describe()}; they kept "
                f"{chosen.residual_bytes / 2**30:.3g} GiB in all (global shapes).")
    if plan.remat_regions:
        return (f"Remat: the step's {plan.remat_regions} jax.checkpoint region(s) are recomputed in the backward "
                "pass, as written.")
    return None


# plan -> a sentence of the verdict, or None; extend with VERDICT_RULES.append(rule)
VERDICT_RULES: list[Callable] = [remat, why]


def verdict(plan) -> list[str]:
    """The verdict's lines: the headline, the parameter groups, then each rule's sentence."""
    if not plan.in_roles:
        return ["(this plan file predates the verdict: plan again to see it)"]
    lines = [headline(plan)]
    if INPUT in plan.in_roles and not {PARAM, OPT_STATE} & set(plan.in_roles):
        lines.append("(The step returns no argument's next value, so parameters cannot be told from inputs: "
                     "every argument is read as an input here. A training step that returns its new "
                     "parameters and optimizer state gets the full verdict.)")
    groups = parameter_groups(plan)
    if groups:
        lines.append("Parameters: " + "; ".join(groups) + ".")
    lines += [s for rule in VERDICT_RULES if (s := rule(plan))]
    return lines
