"""The ``shardsearch`` command.

    shardsearch plan examples/train_mlp.py:planning_target --mesh 2x4 --cluster h100-8 --out plan.json
    shardsearch explain plan.json
    shardsearch advise examples/train_mlp.py:planning_target --cluster h100-8x8-ib --max-devices 64 --out advice.md --plot advice.png
    shardsearch bench --suite gpt --cluster h100-8 --mesh 2x4 --mesh 4x2
    shardsearch presets
    shardsearch profile --mesh 2x4 --out my.json [--quick]
    shardsearch launch -n 2 --local-devices 4 -- python -m examples.multihost_gpt

``plan`` takes ``MODULE:FUNCTION`` (a module name or a .py path): a function of no
arguments that returns ``(train_step, example_args)``; the args may be
``jax.ShapeDtypeStruct``s, so nothing is allocated. Planning needs no devices.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Automatic sharding for JAX training steps.")

EXIT_BAD_INPUT = 2


def _print_version(value: bool) -> None:
    if value:
        from shardsearch import __version__

        typer.echo(f"shardsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
):
    """Automatic sharding for JAX training steps."""


def _parse_mesh(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(t) for t in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(n <= 0 for n in shape):
        raise typer.BadParameter(f"{text!r} is not a mesh shape; write it like 2x4 or 8")
    return shape


def _load_target(target: str):
    module_name, _, func_name = target.rpartition(":")
    if not module_name or not func_name:
        raise typer.BadParameter(f"{target!r} must look like MODULE:FUNCTION or path/to/file.py:FUNCTION")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise typer.BadParameter(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if func is None:
        raise typer.BadParameter(f"{module_name} has no {func_name}")
    return func()


def _parse_pin(text: str):
    """``PATH=SPEC`` with SPEC like ``model,-`` (``-`` replicated, ``data+model`` two axes)."""
    from jax.sharding import PartitionSpec

    path, eq, spec = text.rpartition("=")
    if not eq or not path:
        raise typer.BadParameter(f"{text!r} is not PATH=SPEC; write it like \"[0]['embed']['wte']=model,-\"")
    entries = []
    for entry in (e.strip() for e in spec.split(",")) if spec.strip() else ():
        axes = tuple(a for a in entry.split("+") if a) if entry not in ("-", "None", "") else ()
        entries.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return path, PartitionSpec(*entries)


@app.command()
def plan(
    target: str = typer.Argument(..., help="MODULE:FUNCTION returning (train_step, example_args)"),
    mesh: str = typer.Option("2x4", help="mesh shape, e.g. 2x4 (axes data, model) or 8"),
    cluster: str = typer.Option("h100-8", help="preset name or profile JSON path"),
    memory_budget: Optional[str] = typer.Option(
        None, help="per device: bytes, or 8GB / 7.5GiB / 80% (of the cluster's memory; default: all of it)"),
    time_limit: float = typer.Option(30.0, help="solver time limit in seconds"),
    out: Optional[Path] = typer.Option(None, help="write the plan as JSON here"),
    pin: Optional[list[str]] = typer.Option(
        None, help="keep an argument's layout: PATH=SPEC, e.g. \"[0]['embed']['wte']=model,-\" "
                   "(PATH a keystr path or regex; SPEC per dim: an axis, a+b, or - for replicated); repeatable"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="reuse a plan from the plan cache"),
):
    """Search a plan and print it."""
    import shardsearch as ss

    pins = [_parse_pin(p) for p in pin or ()]
    try:
        fn, args = _load_target(target)
        result = ss.plan(
            fn, *args, mesh=_parse_mesh(mesh), cluster=cluster, memory_budget=memory_budget,
            time_limit_s=time_limit, verbose=True, pins=pins, cache=cache,
        )
    except ss.ShardsearchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    typer.echo(result.summary())
    if out is not None:
        result.save(out)
        typer.echo(f"\nplan written to {out}")


@app.command()
def advise(
    target: str = typer.Argument(..., help="MODULE:FUNCTION returning (train_step, example_args)"),
    cluster: str = typer.Option("h100-8", help="preset name or profile JSON path"),
    devices: Optional[list[int]] = typer.Option(None, help="a device count to sweep; repeatable (default: 1, 2, 4, ...)"),
    max_devices: Optional[int] = typer.Option(None, help="sweep 1, 2, 4, ... up to this many (default: the cluster)"),
    batch_mode: str = typer.Option("global", help="global (strong scaling) or per_device (weak scaling)"),
    goal: str = typer.Option("fastest", help="the pick to report and verify: fastest or cheapest"),
    out: Optional[list[Path]] = typer.Option(None, help="write the table: .md, .csv or .json; repeatable"),
    plot: Optional[Path] = typer.Option(None, help="write the plot (.png)"),
    plans: Optional[Path] = typer.Option(None, help="save every row's plan in this folder"),
    verify: bool = typer.Option(False, help="compile the pick on a fake mesh of its size (CPU devices)"),
    memory_budget: Optional[str] = typer.Option(
        None, help="per device: bytes, or 8GB / 7.5GiB / 80% (of the cluster's memory; default: all of it)"),
    price: Optional[float] = typer.Option(None, help="price per device-hour (default: the cluster profile's)"),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="skip meshes proven slower than one with as many devices"),
    time_limit: float = typer.Option(30.0, help="solver time limit per configuration, seconds"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="reuse plans from the plan cache"),
    workers: int = typer.Option(1, min=1, help="processes to share the device counts between (e.g. 2 on 2 cores)"),
    stages: Optional[list[int]] = typer.Option(None, help="also a row per count in this many pipeline stages; repeatable"),
):
    """How many devices, which mesh, at what cost: plan the step on every device count and mesh."""
    from cost_model.errors import ShardsearchError  # jax not imported yet: --verify sets the device count
    from shardsearch.advise.command import fake_devices_for, run

    try:
        if verify:
            fake_devices_for(cluster, devices or (), max_devices)
        run(_load_target(target), cluster=cluster, devices=devices or (), max_devices=max_devices,
            batch_mode=batch_mode, memory_budget=memory_budget, price=price, goal=goal, outs=out or (),
            plot=plot, plans=plans, verify=verify, prune=prune, time_limit=time_limit, cache=cache, echo=typer.echo,
            workers=workers, target_name=target, stages=stages or ())
    except ShardsearchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err


@app.command()
def explain(
    path: Path = typer.Argument(..., help="a plan JSON written by `shardsearch plan --out` or plan.save"),
    top: int = typer.Option(10, min=1, help="rows in each top-consumers list"),
    operators: bool = typer.Option(False, "--operators/--no-operators", help="also print every operator's strategy"),
    primitive: Optional[list[str]] = typer.Option(None, help="only these primitives in the operator table "
                                                             "(implies --operators); repeatable"),
    plot: Optional[Path] = typer.Option(None, help="also draw the plan as a PNG here (matplotlib)"),
):
    """Take a saved plan apart, top-down: the verdict, the alternatives, the top
    communication, memory and resharding consumers; --operators for every operator."""
    import shardsearch as ss

    try:
        plan = ss.Plan.load(path)
        typer.echo(plan.explain(top=top, operators=operators or bool(primitive), primitives=tuple(primitive or ())))
        if plot is not None:
            plan.plot(plot)
            typer.echo(f"\nplot written to {plot}")
    except ss.ShardsearchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err


@app.command()
def bench(
    suite: str = typer.Option(..., help="gpt, bert, moe, wresnet or mlp"),
    cluster: str = typer.Option("h100-8", help="preset name or profile JSON path"),
    mesh: list[str] = typer.Option(["2x4"], help="mesh shape; repeat for several"),
    config: Optional[list[str]] = typer.Option(None, help="config names (default: the scaled-down ones)"),
    out: Optional[Path] = typer.Option(None, help="report folder (default: benchmarks/results)"),
    wallclock: bool = typer.Option(True, "--wallclock/--no-wallclock",
                                   help="also run each program on the fake CPU mesh (secondary column)"),
    target: str = typer.Option("cpu", help="gpu: compile for the cluster's GPUs without them (shardsearch[gpu-aot]) "
                                           "and judge with overlap"),
):
    """Plan + hand-written baselines on a suite, judged by the compiled programs."""
    sys.path.insert(0, os.getcwd())
    try:
        from benchmarks.cli import RESULTS, run
    except ImportError as err:
        typer.echo("error: the benchmarks live in the shardsearch source checkout; run this from its root", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    from cost_model.errors import ShardsearchError  # jax not imported yet: run() sets the device count

    try:
        path = run(suite, cluster, mesh, config or None, out or RESULTS, wallclock=wallclock, target=target)
    except ShardsearchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    typer.echo(f"report written to {path}")


@app.command()
def launch(
    command: list[str] = typer.Argument(..., help="the worker command, after --"),
    num_processes: int = typer.Option(2, "-n", "--num-processes", help="processes to start on this machine"),
    local_devices: Optional[int] = typer.Option(None, help="CPU devices per process (fake devices for testing)"),
    port: Optional[int] = typer.Option(None, help="coordinator port on 127.0.0.1 (default: a free one)"),
    timeout: Optional[float] = typer.Option(None, help="stop every process after this many seconds"),
):
    """Start N local processes of one jax.distributed run; each calls initialize_from_env().

    shardsearch launch -n 2 --local-devices 4 -- python -m examples.multihost_gpt
    """
    from shardsearch.errors import ShardsearchError
    from shardsearch.runtime.launch import launch as run_processes

    try:
        code = run_processes(command, num_processes, local_devices=local_devices, port=port, timeout_s=timeout)
    except ShardsearchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    raise typer.Exit(code if code >= 0 else 128 - code)  # killed by signal s: 128 + s, as shells report it


@app.command()
def presets():
    """List the cluster presets (per device figures; --cluster NAME)."""
    from cost_model import Cluster, preset_names
    from shardsearch.reporting.format import fmt_rate, table

    rows = []
    for name in preset_names():
        c = Cluster.load(name)
        rows.append((name, str(c.devices_per_node), fmt_rate(c.peak_flops, "FLOP/s"), f"{c.memory_bytes / 1e9:.3g} GB",
                     fmt_rate(c.intra_node.bandwidth, "B/s"), fmt_rate(c.inter_node.bandwidth, "B/s"),
                     _first_sentence(c.description)))
    header = ("preset", "devices/node", "peak", "memory", "intra-node", "inter-node", "what it is")
    typer.echo("\n".join(table(header, rows, indent="", right=(1, 2, 3, 4, 5))))


def _first_sentence(text: str, limit: int = 72) -> str:
    sentence = text.split(". ")[0].split(": ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 3].rstrip() + "..."


@app.command()
def profile(
    mesh: str = typer.Option(..., help="mesh shape of the devices to measure, e.g. 2x4 (axes data, model)"),
    out: Path = typer.Option(..., help="write the profile JSON here; pass it to --cluster / cluster="),
    quick: bool = typer.Option(False, help="a short sweep (seconds) instead of the full one (a minute or two)"),
    name: Optional[str] = typer.Option(None, help="cluster name stored in the profile (default: the file's stem)"),
):
    """Measure the devices at hand (matmul, memory, collectives) and write a cluster profile."""
    shape = _parse_mesh(mesh)
    # On CPU, give jax as many devices as the mesh needs (no effect once jax has started).
    if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        flag = f"--xla_force_host_platform_device_count={math.prod(shape)}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    from cost_model import ShardsearchError
    from cost_model import profile as measure

    try:
        cluster = measure(shape, out, quick=quick, name=name or out.stem)
    except ShardsearchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from err
    _print_profile(cluster)
    typer.echo(f"\nprofile written to {out}; plan with it: --cluster {out}")


def _print_profile(cluster) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cluster.name}: {cluster.devices_per_node} devices/node", show_header=True)
    for col in ("figure", "value"):
        table.add_column(col)
    for dtype, flops in cluster.peak_flops_by_dtype:
        table.add_row(f"peak {dtype}", f"{flops / 1e9:.3g} GFLOP/s")
    table.add_row("memory bandwidth", f"{cluster.hbm_bandwidth / 1e9:.3g} GB/s")
    table.add_row("memory", f"{cluster.memory_bytes / 1e9:.3g} GB")
    rows = [("intra-node (all)", cluster.intra_node), ("inter-node (all)", cluster.inter_node)]
    rows += [(f"{kind} ({scope.replace('_', '-')})", link) for kind, scope, link in cluster.collectives]
    for label, link in rows:
        table.add_row(label, f"{link.bandwidth / 1e9:.3g} GB/s, {link.latency * 1e6:.3g} us latency")
    Console().print(table)


def main():
    app()


if __name__ == "__main__":
    main()
