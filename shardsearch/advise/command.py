"""``shardsearch advise``: the sweep from the command line (see ``shardsearch.cli``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence


def fake_devices_for(cluster: str, devices: Sequence[int], max_devices: int | None) -> None:
    """On CPU, give jax as many devices as the sweep's largest count (no effect once jax
    started), so ``--verify`` can compile the pick on a fake mesh of its size."""
    from cost_model import Cluster  # no jax yet

    c = Cluster.load(cluster)
    most = max(devices) if devices else (max_devices or c.capacity or c.devices_per_node)
    if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        flag = f"--xla_force_host_platform_device_count={most}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def table_console():
    """A terminal's own width; piped or redirected, wide enough for the whole table (rich
    would squeeze it into 80 columns and cut the numbers short)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def run(target: tuple[Callable, tuple], *, cluster: str, devices: Sequence[int], max_devices: int | None,
        batch_mode: str, memory_budget: float | str | None, price: float | None, goal: str, outs: Sequence[Path],
        plot: Path | None, plans: Path | None, verify: bool, prune: bool, time_limit: float, cache: bool,
        echo: Callable[[str], None], workers: int = 1, target_name: str | None = None,
        stages: Sequence[int] = ()) -> None:
    """Sweep, print the table, write the outputs; ShardsearchError for bad input."""
    import shardsearch as ss

    fn, args = target
    console = table_console()
    try:
        advice = ss.advise(fn, *args, cluster=cluster, devices=list(devices) or None, max_devices=max_devices,
                           batch_mode=batch_mode, memory_budget=memory_budget, price_per_device_hour=price,
                           prune=prune, time_limit_s=time_limit, cache=cache, workers=workers, target=target_name,
                           stages=stages)
    except ss.AdviseError as err:
        if getattr(err, "advice", None) is not None:
            console.print(err.advice)
        raise
    console.print(advice)
    pick = advice.best(goal)
    echo(f"{goal}: {pick.devices} devices as mesh {pick.mesh}, {pick.step_s * 1e3:.4g} ms/step, "
         f"{pick.throughput:.4g} samples/s, {pick.peak_bytes / 1e9:.3g} GB per device")
    for out in outs:
        advice.save(out, plans=plans if out.suffix.lower() == ".json" else None)
        echo(f"written {out}")
    if plans is not None and not any(o.suffix.lower() == ".json" for o in outs):
        advice.save_plans(plans)
        echo(f"plans written to {plans}/")
    if plot is not None:
        advice.plot(plot)
        echo(f"written {plot}")
    if verify:
        echo(str(advice.verify(fn, *args, row=pick)))
