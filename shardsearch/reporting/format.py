"""Units and aligned text tables, the same in the summary, ``explain`` and the CLI."""

from __future__ import annotations


def fmt_s(s: float) -> str:
    """Seconds in the unit that keeps 1-3 digits before the point: ``1.250 ms``."""
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_bytes(b: float) -> str:
    """Bytes in binary units: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return ""


def fmt_rate(value: float, unit: str) -> str:
    """A rate in decimal units with three significant digits: ``989 TFLOP/s``, ``150 GFLOP/s``."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "  ",
          right: tuple[int, ...] = ()) -> list[str]:
    """Lines of a table with aligned columns; columns in ``right`` are right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells):
        return indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), *(line(r) for r in rows)]
