"""The compact notation of layouts and strategy names, explained where it is printed."""

from __future__ import annotations

LEGEND = (
    "notation: a layout lists each dim's mesh axes: [data, -] splits dim 0 over 'data' and keeps dim 1 whole\n"
    "  ('-' whole on every device, 'data+model' split over both axes, [] a scalar); in strategy names the\n"
    "  same layout reads S(data)xR (S(..) split, R whole), 'lhs @ rhs -> out' gives a contraction's operand\n"
    "  and result layouts, 'a, b -> c' any operator's, and [AR(model)] an all-reduce over 'model' it pays\n"
    "  ([RS(model)]: a reduce-scatter, its result split over 'model'; priced as the all-reduce)"
)


def legend_lines() -> list[str]:
    return LEGEND.splitlines()
