"""Sharded train-state checkpoints with orbax that restore onto another mesh or plan.

Every process writes its own shards (``save_checkpoint``). ``restore_checkpoint``
reads them back in the layout the given plan wants for that argument, on that
plan's mesh, so a checkpoint written under one plan (say data=2 x model=4) loads
straight into another (data=4 x model=2, or a plan for another cluster): a new plan
never strands a checkpoint. A pipelined plan's state (each leaf on its stage's
submesh) saves the same way, and restores onto any plan: under a pipelined plan each
leaf goes to the submesh of the stage that owns it. Call both on every process of a
multi-process run.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shardsearch.apply.mesh import as_auto_mesh, device_mesh, mesh_shape
from shardsearch.errors import CheckpointError, PlanError
from shardsearch.plan import Plan, to_partition_spec

EXISTS = "{path} already exists; pass overwrite=True to replace it, or save to a new directory"
NO_CHECKPOINT = "no checkpoint at {path} ({why}); pass the directory that save_checkpoint(path, state) wrote"
DOES_NOT_MATCH = (
    "the checkpoint at {path} does not fit `like` ({why}); pass a `like` with the tree structure "
    "and shapes of the state that was saved"
)
NOT_IN_PLAN = (
    "`like` leaf {path} is not an argument of the plan (argnum={argnum}; the plan's leaves there: {have}); "
    "pass the state the plan was made for, or the argnum of that state in the step"
)
SHAPE_NOT_PLANNED = (
    "`like` leaf {path} has shape {shape} but the plan was made for shape {planned}; "
    "pass the state the plan was made for, or plan again for this one"
)
LIKE_PER_ARGNUM = "argnum={argnum} names {n} arguments, so `like` must be a tuple of {n} states; got {got}"
MESH_NOT_PLANNED = (
    "restore_checkpoint: the plan was made for mesh {planned} but mesh= is {given}; "
    "pass a mesh of the plan's shape (or none: the plan's mesh over jax.devices()), or plan again"
)
NO_TARGET = (
    "restore_checkpoint: `like` leaf {path} has no sharding to restore into; pass plan= (restore in "
    "the plan's layout), mesh= (replicate it on that mesh), or a `like` of sharded arrays"
)


def _abs(path) -> str:
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)  # orbax wants absolute paths


def save_checkpoint(path, state: Any, *, overwrite: bool = False) -> None:
    """Write ``state`` (a pytree of sharded ``jax.Array``s) to the directory ``path``.

    Returns when the checkpoint is complete on disk.
    """
    path = _abs(path)
    if os.path.exists(path) and not overwrite:
        raise CheckpointError(EXISTS.format(path=path))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state, force=overwrite)


def plan_mesh(plan: Plan, mesh=None) -> Mesh:
    """The device mesh a plan runs on: ``mesh`` if given (it must have the plan's axes),
    else the plan's mesh shape over ``jax.devices()``."""
    if mesh is None:
        return device_mesh(plan.mesh)
    mesh = as_auto_mesh(mesh)
    if mesh_shape(mesh) != plan.mesh:
        raise PlanError(MESH_NOT_PLANNED.format(planned=plan.mesh, given=mesh_shape(mesh)))
    return mesh


def _arg_shardings(plan: Plan, mesh: Mesh) -> dict[str, NamedSharding]:
    """Argument path -> where it lives under a pipelined plan: its stage's submesh, or the
    submeshes of the stages holding its layers (``pipeline.step.arg_shardings``)."""
    p = plan.pipeline
    if p is None or p.num_stages <= 1:
        return {}
    from shardsearch.pipeline.step import arg_shardings

    return dict(zip(plan.in_paths, arg_shardings(plan, mesh)))


def _plan_shardings(like: Any, plan: Plan, mesh: Mesh, argnum: int) -> Any:
    prefix = f"args[{argnum}]"
    specs = {p: s for p, s in zip(plan.in_paths, plan.flat_in_specs) if p.startswith(prefix)}
    on = _arg_shardings(plan, mesh)
    shapes = dict(zip(plan.in_paths, [a[0] for a in plan.in_avals])) if plan.in_avals else {}

    def one(key_path, leaf):
        path = prefix + jax.tree_util.keystr(key_path)
        if path not in specs:
            have = ", ".join(list(specs)[:4]) + (", ..." if len(specs) > 4 else "") or "none"
            raise PlanError(NOT_IN_PLAN.format(path=path, argnum=argnum, have=have))
        if path in shapes and tuple(np.shape(leaf)) != tuple(shapes[path]):
            raise PlanError(SHAPE_NOT_PLANNED.format(path=path, shape=tuple(np.shape(leaf)), planned=shapes[path]))
        return on.get(path) or NamedSharding(mesh, to_partition_spec(specs[path]))

    return jax.tree_util.tree_map_with_path(one, like)


def _own_shardings(like: Any, mesh) -> Any:
    replicated = None if mesh is None else NamedSharding(as_auto_mesh(mesh), PartitionSpec())

    def one(key_path, leaf):
        sharding = getattr(leaf, "sharding", None) or replicated
        if sharding is None:
            raise CheckpointError(NO_TARGET.format(path=jax.tree_util.keystr(key_path)))
        return sharding

    return jax.tree_util.tree_map_with_path(one, like)


def _target(like: Any, plan: Plan | None, mesh, argnum: int | Sequence[int]) -> Any:
    if plan is None:
        shardings = _own_shardings(like, mesh)
    elif isinstance(argnum, int):
        shardings = _plan_shardings(like, plan, plan_mesh(plan, mesh), argnum)
    else:
        argnums = tuple(argnum)
        if not isinstance(like, (tuple, list)) or len(like) != len(argnums):
            got = f"a {type(like).__name__}" + (f" of {len(like)}" if isinstance(like, (tuple, list)) else "")
            raise PlanError(LIKE_PER_ARGNUM.format(argnum=argnums, n=len(argnums), got=got))
        device_mesh = plan_mesh(plan, mesh)
        shardings = type(like)(_plan_shardings(x, plan, device_mesh, a) for x, a in zip(like, argnums))

    def abstract(leaf, sharding):
        leaf = leaf if hasattr(leaf, "shape") and hasattr(leaf, "dtype") else np.asarray(leaf)
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree_util.tree_map(abstract, like, shardings)


def restore_checkpoint(path, like: Any, *, plan: Plan | None = None, mesh=None, argnum: int | Sequence[int] = 0):
    """Read the checkpoint at ``path`` into a pytree shaped like ``like``.

    ``like``: the state's structure, as arrays or ``jax.ShapeDtypeStruct``s (nothing
    is allocated for them); the result takes their dtypes.
    ``plan``: lay every leaf out as the plan lays out argument ``argnum`` of the step
    (a tuple of argnums with a tuple ``like``, e.g. ``(0, 1)`` for params and optimizer
    state), on ``mesh`` (default: the plan's mesh over ``jax.devices()``). Without a
    plan, each leaf keeps the sharding of its ``like`` leaf, or is replicated on ``mesh``.
    """
    target = _target(like, plan, mesh, argnum)
    path = _abs(path)
    if "://" not in path and not os.path.isdir(path):
        raise CheckpointError(NO_CHECKPOINT.format(path=path, why="not a directory"))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            if checkpointer.metadata(path).item_metadata is None:
                raise CheckpointError(NO_CHECKPOINT.format(path=path, why="it holds no orbax checkpoint metadata"))
            return checkpointer.restore(path, target)
    except FileNotFoundError as err:
        raise CheckpointError(NO_CHECKPOINT.format(path=path, why=err)) from err
    except ValueError as err:
        why = " ".join(str(err).split())
        if "incomplete checkpoint" in why or "not found" in why:
            raise CheckpointError(NO_CHECKPOINT.format(path=path, why=why)) from err
        raise CheckpointError(DOES_NOT_MATCH.format(path=path, why=why[:600])) from err
