"""Plans as JSON files: versioned, validated on load, readable by a person."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cost_model import MeshShape
from shardsearch.errors import PlanError

FORMAT = "shardsearch-plan"
VERSION = 1

BAD_FILE = "{path} is not a readable shardsearch plan ({why}); re-create it with plan.save(path)"


def _spec_json(spec) -> list[list[str]]:
    return [list(d) for d in spec]


def _spec_load(x) -> tuple[tuple[str, ...], ...]:
    if not isinstance(x, list) or not all(isinstance(d, list) and all(isinstance(a, str) for a in d) for d in x):
        raise ValueError(f"a spec must be a list of lists of mesh-axis names, got {x!r}")
    return tuple(tuple(d) for d in x)


def plan_to_dict(plan) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "program_hash": plan.program_hash,
        "mesh": {"axis_names": list(plan.mesh.axis_names), "axis_sizes": list(plan.mesh.axis_sizes)},
        "cluster": plan.cluster,
        "predicted": dataclasses.asdict(plan.predicted),
        "stats": dataclasses.asdict(plan.stats),
        "arguments": [{"path": p, "spec": _spec_json(s)} for p, s in zip(plan.in_paths, plan.flat_in_specs)],
        "results": [{"path": p, "spec": _spec_json(s)} for p, s in zip(plan.out_paths, plan.flat_out_specs)],
        "operators": [
            {
                "node": i,
                "primitive": plan.node_primitive[i],
                "strategy": plan.node_strategy[i],
                "out_specs": [_spec_json(s) for s in plan.node_out_specs[i]],
                "operand_specs": {str(j): _spec_json(s) for j, s in plan.node_operand_specs.get(i, {}).items()},
            }
            for i in sorted(plan.node_out_specs)
        ],
        "fallback": [dataclasses.asdict(f) for f in plan.fallback],
    }


def plan_from_dict(d: dict[str, Any], where: str = "plan"):
    from shardsearch.plan import FallbackOp, Plan, Predicted, SolveStats

    try:
        if d.get("format") != FORMAT:
            raise ValueError(f"'format' is {d.get('format')!r}, expected {FORMAT!r}")
        if d.get("version") != VERSION:
            raise ValueError(f"version {d.get('version')!r} is not supported (this shardsearch reads {VERSION})")
        mesh = MeshShape(tuple(d["mesh"]["axis_names"]), tuple(int(n) for n in d["mesh"]["axis_sizes"]))
        ops = d["operators"]
        in_specs = tuple(_spec_load(a["spec"]) for a in d["arguments"])
        out_specs = tuple(_spec_load(a["spec"]) for a in d["results"])
        return Plan(
            mesh=mesh,
            cluster=str(d["cluster"]),
            in_specs=None,  # filled in by apply(), which knows the argument tree
            out_specs=None,
            flat_in_specs=in_specs,
            flat_out_specs=out_specs,
            in_paths=tuple(a["path"] for a in d["arguments"]),
            out_paths=tuple(a["path"] for a in d["results"]),
            node_out_specs={int(o["node"]): tuple(_spec_load(s) for s in o["out_specs"]) for o in ops},
            node_operand_specs={
                int(o["node"]): {int(j): _spec_load(s) for j, s in o["operand_specs"].items()}
                for o in ops
                if o["operand_specs"]
            },
            node_strategy={int(o["node"]): str(o["strategy"]) for o in ops},
            node_primitive={int(o["node"]): str(o["primitive"]) for o in ops},
            predicted=Predicted(**d["predicted"]),
            stats=SolveStats(**d["stats"]),
            fallback=tuple(
                FallbackOp(f["node"], f["primitive"], tuple(tuple(s) for s in f["shapes"]), f["label"])
                for f in d["fallback"]
            ),
            program_hash=str(d["program_hash"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise PlanError(BAD_FILE.format(path=where, why=what)) from err


def save_plan(plan, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(plan_to_dict(plan), f, indent=1)


def load_plan(path: str | os.PathLike):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise PlanError(BAD_FILE.format(path=path, why=str(err))) from err
    if not isinstance(data, dict):
        raise PlanError(BAD_FILE.format(path=path, why="the file does not hold a JSON object"))
    return plan_from_dict(data, str(path))
