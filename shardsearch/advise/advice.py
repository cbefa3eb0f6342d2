"""The sweep's answer as plain data: one ``Row`` per configuration, and ``Advice`` to
query (``best``, ``pareto``), print, save and plot them.

Definitions (every output states the batch mode):
  step_s        predicted seconds per step (``plan.predicted.total_s``)
  throughput    samples per second = batch / step_s (batch: the global batch at that count)
  efficiency    (throughput / devices) / (the same of the fastest mesh at the smallest
                count): 1.0 is linear scaling, for strong and weak scaling alike
  peak_bytes    per device, with the carried state (params, optimizer state) donated
  cost_per_step devices * step_s * price per device-hour / 3600
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from shardsearch.advise.batch import BatchInfo, BatchMode
from shardsearch.errors import AdviseError

GOALS = ("fastest", "cheapest")
UNKNOWN_GOAL = "goal={goal!r} is not one of {goals}; pass best('fastest') or best('cheapest')"
NO_PRICE = ("budget={budget} needs a price per device-hour, and cluster {cluster!r} has none: set "
            "'price_per_device_hour' in its profile, or pass price_per_device_hour= to ss.advise")
NOTHING_FITS = ("no configuration fits in {budget} per device: the least any needs is {least} ({where}). "
                "Sweep more devices (up to what the cluster holds), "
                "rematerialize activations (jax.checkpoint), use a smaller batch, or a cluster with more memory "
                "per device")
MISSED = "no configuration {what}; the closest is {row} at {value}. {fix}"


def human_bytes(b: float) -> str:
    """``123456789 bytes (118 MiB)``: exact for a budget, readable for a person."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b:.6g} bytes ({b / size:.3g} {unit})"
    return f"{b:.6g} bytes"


class RowStatus(str, enum.Enum):
    PLANNED = "planned"  # planned and fits in memory
    OVER_MEMORY = "over memory"  # planned without the memory budget: no plan of this mesh fits
    DOMINATED = "dominated"  # skipped: provably no faster than a fitting mesh of the same count


@dataclasses.dataclass(frozen=True)
class Row:
    """One configuration of a sweep as plain data (see the module notes for the figures);
    ``plan`` is its ``Plan`` (None when dominated), ``auto(fn)`` compiles it."""

    devices: int
    mesh_shape: tuple[int, ...]
    stages: int  # pipeline stages (1: none)
    batch: int  # samples per step (the global batch at this count)
    tokens_per_step: int | None
    step_s: float | None  # None when dominated (not planned to the end)
    throughput: float | None  # samples/s
    tokens_per_s: float | None
    efficiency: float | None
    fits: bool | None  # None when dominated before its memory was known
    peak_bytes: float | None
    memory_budget: float
    needs_bytes: float | None  # when it does not fit: the least memory per device a plan needs
    cost_per_step: float | None  # None without a price
    cost_per_million_samples: float | None
    cost_per_million_tokens: float | None
    status: RowStatus
    bound_s: float | None  # dominated rows: a lower bound of their step time
    search_s: float
    plan: Any = dataclasses.field(default=None, repr=False, compare=False)  # Plan

    @property
    def mesh(self) -> str:
        mesh = "x".join(map(str, self.mesh_shape))
        return mesh if self.stages == 1 else f"{mesh} in {self.stages} stages"

    @property
    def device_s_per_sample(self) -> float | None:
        """Device-seconds per sample: the cost of a sample without a price."""
        return None if self.step_s is None else self.devices * self.step_s / self.batch

    @property
    def usable(self) -> bool:
        return self.status is RowStatus.PLANNED

    def auto(self, fn, **options):
        """``fn`` compiled with this row's plan on ``devices`` devices (``Plan.apply``)."""
        if self.plan is None:
            raise AdviseError(f"the row for {self.devices} devices, mesh {self.mesh} has no plan "
                              f"({self.status.value}); "
                              "pick a planned row, e.g. advice.best()")
        return self.plan.apply(fn, **options)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "plan"}
        d["mesh_shape"] = list(self.mesh_shape)
        d["status"] = self.status.value
        return d


@dataclasses.dataclass(frozen=True)
class Advice:
    """What ``ss.advise`` found: ``rows`` (one ``Row`` per device count and mesh), the
    cluster, the batch mode (strong or weak scaling) and price they were priced with.
    ``best(goal)`` picks one, ``pareto()`` the time/cost front; ``print(advice)``,
    ``to_markdown()``, ``to_csv()``, ``to_json()``, ``save(path)``, ``save_plans(folder)``,
    ``plot(path)`` and ``verify(fn, *args)`` present and check them."""

    rows: tuple[Row, ...]
    cluster: str
    batch_mode: BatchMode
    memory_budget: float
    price_per_device_hour: float | None
    batch: BatchInfo  # of the program as passed (one device's batch in weak scaling)
    sweep_s: float = 0.0
    cpu_s: float = 0.0
    notes: tuple[str, ...] = ()  # what the sweep could not plan, in words

    # ---- queries ---------------------------------------------------------------------

    def usable(self) -> list[Row]:
        return [r for r in self.rows if r.usable]

    def best(self, goal: str | None = None, *, deadline: float | None = None, budget: float | None = None,
             steps: int = 1) -> Row:
        """The configuration for ``goal``: "fastest" (highest throughput) or "cheapest"
        (least cost, or device-seconds without a price, per sample). ``deadline``: seconds
        ``steps`` steps may take; ``budget``: what they may cost (currency of the price).
        With a deadline the default goal is the cheapest that meets it, otherwise the
        fastest. Only rows that fit in memory are candidates."""
        goal = goal or ("cheapest" if deadline is not None else "fastest")
        if goal not in GOALS:
            raise AdviseError(UNKNOWN_GOAL.format(goal=goal, goals=", ".join(map(repr, GOALS))))
        rows = self.usable()
        if not rows:
            raise self.nothing_fits()
        if deadline is not None:
            rows = self._within(rows, lambda r: r.step_s * steps, deadline,
                                f"finishes {steps} step(s) in {deadline:.4g} s", "seconds",
                                "Raise the deadline, or sweep more devices")
        if budget is not None:
            if self.price_per_device_hour is None:
                raise AdviseError(NO_PRICE.format(budget=budget, cluster=self.cluster))
            rows = self._within(rows, lambda r: r.cost_per_step * steps, budget,
                                f"runs {steps} step(s) for {budget:.4g}", "",
                                "Raise the budget, or accept a later deadline")
        # ties: fewer devices, then the mesh with the longer data axis (the simpler one)
        if goal == "fastest":
            return min(rows, key=lambda r: (-r.throughput, r.devices, -r.mesh_shape[0]))
        return min(rows, key=lambda r: (r.device_s_per_sample, -r.throughput, r.devices, -r.mesh_shape[0]))

    @staticmethod
    def _within(rows, measure, limit, what, unit, fix) -> list[Row]:
        ok = [r for r in rows if measure(r) <= limit]
        if not ok:
            closest = min(rows, key=measure)
            raise AdviseError(MISSED.format(what=what, row=f"{closest.devices} devices, mesh {closest.mesh}",
                                            value=f"{measure(closest):.4g} {unit}".strip(), fix=fix))
        return ok

    def pareto(self) -> list[Row]:
        """Fitting rows no other fitting row beats on both step time and cost per sample
        (device-seconds per sample without a price), by devices."""
        rows = self.usable()
        front = [r for r in rows if not any(
            (o.step_s <= r.step_s and o.device_s_per_sample <= r.device_s_per_sample)
            and (o.step_s < r.step_s or o.device_s_per_sample < r.device_s_per_sample) for o in rows)]
        return sorted(front, key=lambda r: (r.devices, r.mesh_shape))

    def nothing_fits(self) -> AdviseError:
        over = [r for r in self.rows if r.fits is False and r.needs_bytes]
        if not over:
            return AdviseError("no configuration was planned to the end; run the sweep with prune=False")
        least = min(over, key=lambda r: r.needs_bytes or math.inf)
        err = AdviseError(NOTHING_FITS.format(
            budget=human_bytes(self.memory_budget), least=human_bytes(least.needs_bytes),
            where=f"{least.devices} devices, mesh {least.mesh}"))
        err.advice = self
        return err

    # ---- outputs (see report.py and plot.py) ---------------------------------------------

    @property
    def scaling(self) -> str:
        return self.batch_mode.words

    def __str__(self) -> str:
        from shardsearch.advise.report import text

        return text(self)

    def __rich__(self):
        from shardsearch.advise.report import rich_table

        return rich_table(self)

    def to_markdown(self) -> str:
        from shardsearch.advise.report import markdown

        return markdown(self)

    def to_csv(self) -> str:
        from shardsearch.advise.report import csv_text

        return csv_text(self)

    def to_dict(self, plan_paths: dict | None = None) -> dict:
        from shardsearch.advise.report import as_dict

        return as_dict(self, plan_paths)

    def to_json(self, plan_paths: dict | None = None) -> str:
        import json

        return json.dumps(self.to_dict(plan_paths), indent=1)

    def save(self, path, *, plans: str | None = None) -> None:
        """Write the table by the file's suffix: .md, .csv or .json (with ``plans``, a
        folder: every planned row's plan is saved there and the JSON names its file)."""
        from shardsearch.advise.report import save

        save(self, path, plans=plans)

    def save_plans(self, folder) -> dict:
        """Save every row's plan as ``folder/plan-<devices>-<mesh>.json``; returns
        {(devices, mesh_shape, stages): path}."""
        from shardsearch.advise.report import save_plans

        return save_plans(self, folder)

    def verify(self, fn, *args, row: Row | None = None, **calling):
        """Compile ``row`` (default: the fastest) on a fake mesh of its size where this
        machine has the devices; returns a ``verify.Verified`` (``print`` it)."""
        from shardsearch.advise.verify import verify

        return verify(self, row or self.best(), fn, *args, **calling)

    def plot(self, path) -> None:
        """Step time and cost per sample against devices, the Pareto front marked."""
        from shardsearch.advise.plot import plot

        plot(self, path)
