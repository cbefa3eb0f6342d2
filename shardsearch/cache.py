"""The plan cache: the same program, mesh, cluster and options give the saved plan back.

A plan is stored as a plan file (``Plan.save``) named by a hash of everything the search
depends on: the planner's own code, the traced program (``program_hash``: operators,
shapes, edges), the argument and result paths, the mesh, the cluster's figures, the
memory budget, the pins and the search options (``verbose`` and ``cache`` change no
plan, so they are left out). A hit
skips strategies, costs and the solver; tracing still runs, since the key needs it.

Files live in ``$SHARDSEARCH_CACHE_DIR``, else ``~/.cache/shardsearch``. Turn the cache
off with ``cache=False`` (a ``SearchConfig`` option) or ``SHARDSEARCH_NO_CACHE=1``.
A file that cannot be read back is ignored with a warning and replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from pathlib import Path

from cost_model import Cluster, MeshShape
from shardsearch.apply.plan_io import VERSION as PLAN_FORMAT_VERSION
from shardsearch.config import SearchConfig
from shardsearch.errors import PlanError
from shardsearch.graph import OpGraph
from shardsearch.progress import warn_user
from shardsearch.plan import Plan

ENV_DIR = "SHARDSEARCH_CACHE_DIR"
ENV_OFF = "SHARDSEARCH_NO_CACHE"

UNREADABLE = (
    "shardsearch: ignoring the cached plan {path} ({why}); searching again and replacing it. "
    "Delete the cache folder ({folder}) if this keeps happening"
)
UNWRITABLE = (
    "shardsearch: could not write the plan cache file {path} ({why}); the plan is fine but will "
    "be searched again next time. Set {env} to a writable folder, or {off}=1 to turn the cache off"
)

# Options that change how the search reports, not what it finds.
_NOT_IN_KEY = frozenset({"verbose", "cache"})


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or Path.home() / ".cache" / "shardsearch")


def enabled(config: SearchConfig) -> bool:
    return config.cache and os.environ.get(ENV_OFF, "").strip().lower() not in ("1", "true", "yes", "on")


def _cluster_figures(cluster: Cluster) -> dict:
    d = cluster.to_dict()
    for doc in ("description", "sources", "measured", "price_per_device_hour"):  # not figures the planner prices
        d.pop(doc, None)
    return d


def planner_hash() -> str:
    """A hash of the planner's own code and presets (shardsearch and cost_model), so a
    changed strategy rule or cost figure never serves a plan the old code chose."""
    import cost_model
    import shardsearch

    h = hashlib.sha256()
    for package in (shardsearch, cost_model):
        root = Path(package.__file__).parent
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _option(value):
    if hasattr(value, "value"):  # an enum
        return value.value
    if isinstance(value, tuple):  # pins: (key, PartitionSpec) pairs
        return [[k, str(spec)] for k, spec in value]
    return value


def plan_key(
    graph: OpGraph, program_hash: str, mesh: MeshShape, cluster: Cluster, memory_budget: float | None,
    config: SearchConfig, donated: frozenset[int] = frozenset(),
) -> str:
    parts = {
        "planner": planner_hash(),
        "plan_format": PLAN_FORMAT_VERSION,
        "program": program_hash,
        "in_paths": list(graph.in_paths),
        "out_paths": list(graph.out_paths),
        "output_aliases": list(graph.output_aliases),
        "mesh": [list(mesh.axis_names), list(mesh.axis_sizes)],
        "cluster": _cluster_figures(cluster),
        "memory_budget": None if memory_budget is None else float(memory_budget),
        "donated": sorted(donated),
        "options": {
            f.name: _option(getattr(config, f.name)) for f in dataclasses.fields(config) if f.name not in _NOT_IN_KEY
        },
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_dir() / f"{key}.plan.json"


def load_cached(key: str, program_hash: str, mesh: MeshShape, config: SearchConfig) -> Plan | None:
    """The cached plan for ``key`` (``stats.cached`` set), or None: cache off, no entry,
    or an entry that cannot be read back (warned about; the next store replaces it)."""
    if not enabled(config):
        return None
    path = _path(key)
    if not path.exists():
        return None
    try:
        plan = Plan.load(path)
    except PlanError as err:
        warn_user(UNREADABLE.format(path=path, why=err, folder=cache_dir()))
        return None
    if plan.program_hash != program_hash or plan.mesh != mesh:  # a file put there by hand
        why = f"it holds a plan for program {plan.program_hash} on mesh {plan.mesh.axis_sizes}"
        warn_user(UNREADABLE.format(path=path, why=why, folder=cache_dir()))
        return None
    return dataclasses.replace(plan, stats=dataclasses.replace(plan.stats, cached=True))


def store(key: str, plan: Plan, config: SearchConfig) -> None:
    """Write ``plan`` under ``key``; atomically, so processes sharing the folder never
    read half a file. A folder that cannot be written costs a warning, not the plan."""
    if not enabled(config):
        return
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # plain open: honors umask
        try:
            plan.save(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as err:
        warn_user(UNWRITABLE.format(path=path, why=err, env=ENV_DIR, off=ENV_OFF))
