"""Command line of the benchmark runner (also `shardsearch bench`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEFAULT_CONFIGS = {
    "gpt": ["gpt-tiny", "gpt-small"],
    "bert": ["bert-tiny", "bert-small"],
    "moe": ["moe-tiny", "moe-small"],
    "wresnet": ["wresnet-tiny", "wresnet-small"],
    "mlp": ["mlp-dp", "mlp-tp", "mlp-tiny"],
}


def parse_mesh(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.lower().split("x"))


def parse_pipeline(text: str) -> str | int | None:
    """"auto", "none" or a number of stages: shardsearch's ``pipeline=`` option."""
    return None if text.lower() == "none" else "auto" if text.lower() == "auto" else int(text)


def run(suite: str, cluster: str, meshes: list[str], configs: list[str] | None, out: Path,
        wallclock: bool = True, target: str = "cpu", pipeline: str | int | None = "auto") -> Path:
    shapes = [parse_mesh(m) for m in meshes]
    need = max(int(__import__("math").prod(s)) for s in shapes)
    if target == "gpu":  # the CUDA plugin loads on a machine without a GPU only when told to run on the CPU
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flag = f"--xla_force_host_platform_device_count={need}"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    from benchmarks.report import write_report
    from benchmarks.runner import run_suite

    rows = run_suite(suite, configs or DEFAULT_CONFIGS[suite], cluster, shapes, wallclock=wallclock, target=target,
                     pipeline=pipeline)
    return write_report(rows, out, suite, cluster if target == "cpu" else f"{cluster}-{target}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--suite", required=True, choices=sorted(DEFAULT_CONFIGS))
    ap.add_argument("--cluster", default="h100-8")
    ap.add_argument("--mesh", action="append", default=None, help="e.g. 2x4; repeat for several")
    ap.add_argument("--config", action="append", default=None, help="config names; default: scaled-down ones")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-wallclock", action="store_true",
                    help="skip running each program on the fake CPU mesh (the 'wall ms' column)")
    ap.add_argument("--target", choices=("cpu", "gpu"), default="cpu",
                    help="gpu: compile every program for the cluster's GPUs without them (needs "
                         "shardsearch[gpu-aot]) and judge it with overlap; cpu: fake CPU devices")
    ap.add_argument("--pipeline", type=parse_pipeline, default="auto",
                    help="shardsearch's pipeline= option for its row: auto (stages where they pay), none, or a "
                         "number of stages (pinned, e.g. where auto declines)")
    a = ap.parse_args(argv)
    path = run(a.suite, a.cluster, a.mesh or ["2x4"], a.config, a.out, wallclock=not a.no_wallclock, target=a.target,
               pipeline=a.pipeline)
    print(f"report written to {path}")
