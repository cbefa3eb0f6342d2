"""Plans as JSON files: versioned, validated on load, readable by a person."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cost_model import MeshShape
from shardsearch.errors import PlanError
from shardsearch.pipeline.plan_data import pipeline_from_dict, pipeline_to_dict
from shardsearch.plan_records import FallbackOp, MemoryAtPeak, Predicted, ReshardEdge, SolveStats

FORMAT = "shardsearch-plan"
VERSION = 1

BAD_FILE = "{path} is not a readable shardsearch plan ({why}); re-create it with plan.save(path)"
NEWER_FILE = (
    "{path} holds a plan in format version {found}, newer than this shardsearch reads ({version}); "
    "upgrade shardsearch, or plan again with this version and plan.save(path)"
)
PROGRAM_MISMATCH = (
    "this plan was made for another program than {name}(*args): {detail}. "
    "Call it with the arguments the plan was made for, or plan again for these "
    "(shardsearch.auto / shardsearch.plan)"
)


def _spec_json(spec) -> list[list[str]]:
    return [list(d) for d in spec]


def _spec_load(x, mesh: MeshShape, where: str) -> tuple[tuple[str, ...], ...]:
    if not isinstance(x, list) or not all(isinstance(d, list) and all(isinstance(a, str) for a in d) for d in x):
        raise ValueError(f"{where}: a spec must be a list of lists of mesh-axis names, got {x!r}")
    axes = [a for d in x for a in d]
    unknown = sorted(set(axes) - set(mesh.axis_names))
    if unknown:
        raise ValueError(f"{where}: spec {x!r} names mesh axes {unknown} that the plan's mesh {list(mesh.axis_names)} lacks")
    if len(axes) != len(set(axes)):
        raise ValueError(f"{where}: spec {x!r} uses a mesh axis twice")
    return tuple(tuple(d) for d in x)


def _mesh_load(m) -> MeshShape:
    names, sizes = m["axis_names"], m["axis_sizes"]
    if not isinstance(names, list) or not all(isinstance(a, str) for a in names) or len(set(names)) != len(names):
        raise ValueError(f"mesh axis_names must be a list of distinct strings, got {names!r}")
    if not isinstance(sizes, list) or not all(isinstance(n, int) and n > 0 for n in sizes) or len(sizes) != len(names):
        raise ValueError(f"mesh axis_sizes must be {len(names)} positive integers, got {sizes!r}")
    return MeshShape(tuple(names), tuple(sizes))


def _field(d: dict, key: str, kind: type):
    value = d[key]
    if not isinstance(value, kind):
        raise ValueError(f"{key!r} must be a JSON {'object' if kind is dict else 'list'}, got {type(value).__name__}")
    if kind is list and not all(isinstance(x, dict) for x in value):
        raise ValueError(f"every entry of {key!r} must be a JSON object")
    return value


def _record(cls, d: dict, key: str):
    """``cls(**d[key])`` for a dataclass, naming the fields that are missing."""
    fields = _field(d, key, dict)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in fields and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{key!r} lacks the fields {missing}")
    return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields})


def _aval_json(aval) -> dict[str, Any]:
    return {"shape": list(aval[0]), "dtype": aval[1]} if aval else {}


def _op_costs(plan, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if i in plan.node_compute_s:
        out["compute_s"] = plan.node_compute_s[i]
    if i in plan.node_comm_s:
        out["comm_s"] = plan.node_comm_s[i]
    if i in plan.node_label:
        out["label"] = plan.node_label[i]
    return out


def _edge_json(edge) -> dict[str, Any]:
    d = dataclasses.asdict(edge)
    return {**d, "shape": list(edge.shape), "from_spec": _spec_json(edge.from_spec), "to_spec": _spec_json(edge.to_spec)}


def _explain_json(plan, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with what ``shardsearch explain`` reads: per-operator costs and source lines,
    per-argument bytes, the dearest resharding edges (all optional when loading)."""
    for record in d["operators"]:
        record.update(_op_costs(plan, record["node"]))
    if plan.in_local_bytes:
        for record, nbytes in zip(d["arguments"], plan.in_local_bytes):
            record["local_bytes"] = nbytes
    d["reshard_edges"] = [_edge_json(e) for e in plan.reshard_edges]
    return _verdict_json(plan, d)


def _verdict_json(plan, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with what the verdict reads: argument roles, the recipes compared, remat."""
    if plan.in_roles:
        for record, role in zip(d["arguments"], plan.in_roles):
            record["role"] = role
    d["alternatives"] = [{**dataclasses.asdict(a), "in_specs": [_spec_json(s) for s in a.in_specs]}
                         for a in plan.compared]
    d["remat_regions"] = plan.remat_regions
    d["memory_at_peak"] = [dataclasses.asdict(m) for m in plan.memory_at_peak]
    if plan.remat is not None:
        d["remat"] = dataclasses.asdict(plan.remat)
    return d


def _remat(d: dict | None):
    if d is None:
        return None
    from shardsearch.remat import RematPlan

    return RematPlan(str(d["policy"]), tuple(int(c) for c in d["layers"]), tuple(int(x) for x in d["run"]),
                     int(d.get("residual_bytes", 0)), bool(d.get("in_microbatch", False)))


def _alternatives(d: dict, mesh: MeshShape) -> tuple:
    from shardsearch.compare import Alternative

    out = []
    for a in d.get("alternatives", ()):
        where = f"alternative {a.get('name')!r}"
        out.append(Alternative(**{**a, "in_specs": tuple(_spec_load(s, mesh, where) for s in a["in_specs"])}))
    return tuple(out)


def plan_to_dict(plan, costs: bool = True) -> dict[str, Any]:
    """The plan as JSON-ready data; ``costs=False`` leaves out the predicted figures per
    operator and edge (what was chosen only, as ``Plan.fingerprint`` hashes)."""
    in_avals = plan.in_avals or ((),) * len(plan.in_paths)
    d = {
        "format": FORMAT,
        "version": VERSION,
        "program_hash": plan.program_hash,
        "mesh": {"axis_names": list(plan.mesh.axis_names), "axis_sizes": list(plan.mesh.axis_sizes)},
        "cluster": plan.cluster,
        "predicted": dataclasses.asdict(plan.predicted),
        "stats": dataclasses.asdict(plan.stats),
        "arguments": [
            {"path": p, "spec": _spec_json(s), **_aval_json(a)}
            for p, s, a in zip(plan.in_paths, plan.flat_in_specs, in_avals)
        ],
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
    if plan.pipeline is not None:
        d["pipeline"] = pipeline_to_dict(plan.pipeline, lambda p: plan_to_dict(p, costs))
    if plan.pipeline_why:
        d["pipeline_why"] = plan.pipeline_why
    return _explain_json(plan, d) if costs else d


def _in_avals(arguments: list) -> tuple:
    """Shapes and dtypes of the arguments; () when the file predates them (still version 1)."""
    if not all("shape" in a for a in arguments):
        return ()
    out = []
    for a in arguments:
        shape, dtype = a["shape"], a["dtype"]
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"argument {a['path']}: shape must be a list of sizes, got {shape!r}")
        out.append((tuple(shape), str(dtype)))
    return tuple(out)


def _reshard_edges(d: dict, mesh: MeshShape) -> tuple:
    if "reshard_edges" not in d:  # a file from before explain
        return ()
    out = []
    for e in _field(d, "reshard_edges", list):
        where = f"reshard edge {e.get('src')} -> {e.get('dst')}"
        out.append(ReshardEdge(
            src=int(e["src"]), dst=int(e["dst"]), src_name=str(e["src_name"]), dst_name=str(e["dst_name"]),
            shape=tuple(int(n) for n in e["shape"]), from_spec=_spec_load(e["from_spec"], mesh, where),
            to_spec=_spec_load(e["to_spec"], mesh, where), seconds=float(e["seconds"]),
        ))
    return tuple(out)


def plan_fields(d: dict[str, Any], where: str = "plan") -> dict[str, Any]:
    """The fields of the Plan a plan file's JSON object ``d`` holds, checked
    (``Plan.from_dict`` builds the plan from them); ``where`` names the file in errors."""
    if d.get("format") != FORMAT:
        raise PlanError(BAD_FILE.format(path=where, why=f"'format' is {d.get('format')!r}, expected {FORMAT!r}"))
    version = d.get("version")
    if isinstance(version, int) and version > VERSION:
        raise PlanError(NEWER_FILE.format(path=where, found=version, version=VERSION))
    try:
        if version != VERSION:
            raise ValueError(f"version {version!r} is not supported (this shardsearch reads {VERSION})")
        mesh = _mesh_load(_field(d, "mesh", dict))
        ops = _field(d, "operators", list)
        arguments, results = _field(d, "arguments", list), _field(d, "results", list)
        if not all(isinstance(a.get("path"), str) for a in arguments + results):
            raise ValueError("every argument and result needs a string 'path'")
        in_specs = tuple(_spec_load(a["spec"], mesh, a["path"]) for a in arguments)
        out_specs = tuple(_spec_load(a["spec"], mesh, a["path"]) for a in results)
        return dict(
            mesh=mesh,
            cluster=str(d["cluster"]),
            in_specs=None,  # filled in by apply(), which knows the argument tree
            out_specs=None,
            flat_in_specs=in_specs,
            flat_out_specs=out_specs,
            in_paths=tuple(a["path"] for a in arguments),
            out_paths=tuple(a["path"] for a in results),
            node_out_specs={
                int(o["node"]): tuple(_spec_load(s, mesh, f"operator {o['node']}") for s in o["out_specs"])
                for o in ops
            },
            node_operand_specs={
                int(o["node"]): {int(j): _spec_load(s, mesh, f"operator {o['node']}") for j, s in o["operand_specs"].items()}
                for o in ops
                if o["operand_specs"]
            },
            node_strategy={int(o["node"]): str(o["strategy"]) for o in ops},
            node_primitive={int(o["node"]): str(o["primitive"]) for o in ops},
            predicted=_record(Predicted, d, "predicted"),
            stats=_record(SolveStats, d, "stats"),
            fallback=tuple(
                FallbackOp(f["node"], f["primitive"], tuple(tuple(s) for s in f["shapes"]), f["label"],
                           float(f.get("seconds", 0.0)), float(f.get("moved_bytes", 0.0)),
                           tuple(tuple(s) for s in f.get("in_shapes", ())))
                for f in _field(d, "fallback", list)
            ),
            program_hash=str(d["program_hash"]),
            in_avals=_in_avals(arguments),
            node_compute_s={int(o["node"]): float(o["compute_s"]) for o in ops if "compute_s" in o},
            node_comm_s={int(o["node"]): float(o["comm_s"]) for o in ops if "comm_s" in o},
            node_label={int(o["node"]): str(o["label"]) for o in ops if "label" in o},
            reshard_edges=_reshard_edges(d, mesh),
            in_local_bytes=(
                tuple(float(a["local_bytes"]) for a in arguments)
                if arguments and all("local_bytes" in a for a in arguments) else ()
            ),
            in_roles=tuple(str(a["role"]) for a in arguments) if all("role" in a for a in arguments) else (),
            compared=_alternatives(d, mesh),
            remat_regions=int(d.get("remat_regions", 0)),
            remat=_remat(d.get("remat")),
            # a stage's program plans come back as their fields (Plan.from_dict builds them)
            pipeline=pipeline_from_dict(d.get("pipeline"), lambda p: plan_fields(p, where)),
            pipeline_why=str(d.get("pipeline_why", "")),
            memory_at_peak=tuple(MemoryAtPeak(**m) for m in d.get("memory_at_peak", ())),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise PlanError(BAD_FILE.format(path=where, why=what)) from err


def save_plan(plan, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(plan_to_dict(plan), f, indent=1)


def read_plan_file(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object a plan file holds (``Plan.load`` reads the plan from it)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PlanError(BAD_FILE.format(path=path, why=str(err))) from err
    if not isinstance(data, dict):
        raise PlanError(BAD_FILE.format(path=path, why="the file does not hold a JSON object"))
    return data


def _fmt(aval) -> str:
    return f"{aval[1]}{list(aval[0])}"


def program_mismatch(plan, graph, name: str, given_hash: str) -> str:
    """Why a traced program (an OpGraph) differs from the one a plan was made for:
    a PlanError message naming the first argument that differs."""
    in_paths = graph.in_paths
    in_avals = [(graph.nodes[n].outputs[0].shape, graph.nodes[n].outputs[0].dtype.name) for n in graph.input_nodes]
    planned = dict(zip(plan.in_paths, plan.in_avals or ((),) * len(plan.in_paths)))
    given = dict(zip(in_paths, in_avals))
    missing = [p for p in plan.in_paths if p not in given]
    extra = [p for p in in_paths if p not in planned]
    if missing or extra:
        detail = f"the plan has {len(planned)} argument leaves, this call {len(given)}"
        if missing:
            detail += f"; the plan's {missing[0]} is not among this call's arguments"
        if extra:
            detail += f"; this call's {extra[0]} is not in the plan"
    elif not plan.in_avals:
        detail = (
            f"the argument shapes or the function changed (program {given_hash}, plan {plan.program_hash}; "
            "this plan file does not record argument shapes)"
        )
    else:
        changed = [p for p in in_paths if planned[p] != given[p]]
        if changed:
            p = changed[0]
            detail = f"argument {p} is {_fmt(given[p])} here but {_fmt(planned[p])} in the plan"
        else:
            detail = f"same arguments, but the function body differs (program {given_hash}, plan {plan.program_hash})"
    return PROGRAM_MISMATCH.format(name=name, detail=detail)
