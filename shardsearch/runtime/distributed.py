"""Joining a multi-process run: read the launcher's settings, start ``jax.distributed``,
and make sure every process runs the same plan.

``shardsearch launch`` (see ``runtime/launch.py``) sets the ``SHARDSEARCH_*`` variables
below in each process it starts; a worker calls ``initialize_from_env()`` right after
``import jax`` and before anything touches a device. Under Slurm, Open MPI, a Cloud TPU
pod on GKE or with ``JAX_COORDINATOR_ADDRESS`` set it lets ``jax.distributed.initialize()`` configure itself; with none of
these it says so and does nothing, so the same script also runs as a single process.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import jax
import numpy as np

from shardsearch.errors import DistributedError, PlanError
from shardsearch.progress import warn_user

ENV_COORDINATOR = "SHARDSEARCH_COORDINATOR"  # host:port of process 0's coordinator
ENV_NUM_PROCESSES = "SHARDSEARCH_NUM_PROCESSES"
ENV_PROCESS_ID = "SHARDSEARCH_PROCESS_ID"
ENV_LOCAL_DEVICES = "SHARDSEARCH_LOCAL_DEVICES"  # CPU devices per process (optional)

MISSING_SETTING = (
    "{name} is not set but {given} is: a multi-process worker needs {all}. "
    "Start workers with `shardsearch launch -n N -- python your_script.py`, or set all of them."
)
BAD_SETTING = "{name}={value!r} must be {what}; `shardsearch launch` sets it for you"
TOO_LATE = (
    "initialize_from_env() was called after jax had started its devices ({why}). "
    "Call it right after `import jax`, before jax.devices(), any array or any computation."
)
PLANS_DIFFER = (
    "processes chose different plans (fingerprints {fingerprints}); every process now uses "
    "process 0's plan. Plans differ when the solver stops at time_limit_s before proving "
    "optimality; raise time_limit_s, or save a plan once and load it on every process "
    "(plan.save / Plan.load + plan.apply)."
)
PROGRAMS_DIFFER = (
    "processes traced different programs (program hashes {hashes}): every process must call the "
    "step with the same function and argument shapes (the global shapes, not per-process ones)"
)


@dataclasses.dataclass(frozen=True)
class ProcessSettings:
    coordinator: str
    num_processes: int
    process_id: int
    local_devices: int | None  # CPU devices this process shows; None: what the platform has


def _int_setting(env: Mapping[str, str], name: str, lowest: int) -> int:
    value = env[name]
    try:
        number = int(value)
    except ValueError:
        number = lowest - 1
    if number < lowest:
        raise DistributedError(BAD_SETTING.format(name=name, value=value, what=f"an integer >= {lowest}"))
    return number


def settings_from_env(env: Mapping[str, str] | None = None) -> ProcessSettings | None:
    """The launcher's settings from ``env`` (default ``os.environ``); None when not launched."""
    env = os.environ if env is None else env
    required = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
    given = [n for n in required if n in env]
    if not given:
        return None
    for name in required:
        if name not in env:
            raise DistributedError(MISSING_SETTING.format(name=name, given=given[0], all=", ".join(required)))
    host, _, port = env[ENV_COORDINATOR].rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(
            BAD_SETTING.format(name=ENV_COORDINATOR, value=env[ENV_COORDINATOR], what="host:port, e.g. 127.0.0.1:1234")
        )
    num = _int_setting(env, ENV_NUM_PROCESSES, 1)
    pid = _int_setting(env, ENV_PROCESS_ID, 0)
    if pid >= num:
        raise DistributedError(
            BAD_SETTING.format(name=ENV_PROCESS_ID, value=env[ENV_PROCESS_ID], what=f"below {ENV_NUM_PROCESSES}={num}")
        )
    local = _int_setting(env, ENV_LOCAL_DEVICES, 1) if env.get(ENV_LOCAL_DEVICES) else None
    return ProcessSettings(env[ENV_COORDINATOR], num, pid, local)


def initialize(settings: ProcessSettings) -> None:
    """Start ``jax.distributed`` for one process; on CPU, with ``local_devices`` devices
    and gloo collectives (CPU computations across processes need them)."""
    try:
        if settings.local_devices is not None:
            jax.config.update("jax_num_cpu_devices", settings.local_devices)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=settings.coordinator,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
        )
    except RuntimeError as err:
        if "before" not in str(err):  # not the "called too late" complaint: someone else's failure
            raise
        raise DistributedError(TOO_LATE.format(why=err)) from err


# Environments ``jax.distributed.initialize()`` configures itself from, each known by
# variables its launcher sets (what jax's own detectors look for).
AUTO_DETECTED = (
    # jax's own settings, e.g. a Kubernetes JobSet's (with num_processes / process_id set
    # the same way; jax's Kubernetes detector needs the `kubernetes` package and a service account)
    ("JAX_COORDINATOR_ADDRESS", ("JAX_COORDINATOR_ADDRESS",)),
    ("Slurm", ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")),
    ("Open MPI", ("OMPI_MCA_orte_hnp_uri",)),
    ("Cloud TPU (GKE)", ("TPU_WORKER_HOSTNAMES",)),
    ("Cloud TPU", ("TPU_PROCESS_ADDRESSES",)),
)

NOTHING_TO_JOIN = (
    "initialize_from_env() found no multi-process settings, so this process runs alone: no "
    "SHARDSEARCH_COORDINATOR (set by `shardsearch launch`) and none of the variables "
    "jax.distributed.initialize() detects ({detected}). On a cluster, start the script "
    "through its launcher (srun, mpirun, a Kubernetes JobSet, a TPU pod's --worker=all) or set "
    "JAX_COORDINATOR_ADDRESS with jax.distributed.initialize's num_processes / process_id."
)


class NotDistributedWarning(UserWarning):
    """``initialize_from_env()`` found no multi-process settings; the process runs alone."""


def detected_environment(env: Mapping[str, str] | None = None) -> str | None:
    """The name of the cluster environment jax.distributed would configure itself from, or None."""
    env = os.environ if env is None else env
    return next((name for name, needed in AUTO_DETECTED if all(v in env for v in needed)), None)


def initialize_from_env(env: Mapping[str, str] | None = None) -> ProcessSettings | None:
    """Join a multi-process run; call it right after ``import jax``.

    - Started by ``shardsearch launch`` (the ``SHARDSEARCH_*`` variables): joins that run.
    - Under a launcher ``jax.distributed.initialize()`` detects by itself (Slurm, Open MPI,
      Cloud TPU on GKE, or ``JAX_COORDINATOR_ADDRESS``): calls it with no arguments.
    - Otherwise does nothing and says so (a ``NotDistributedWarning``): the script runs as
      one process.

    Returns the settings joined (from ``jax.process_count()`` / ``process_index()`` when
    jax detected them), or None when the process runs alone.
    """
    settings = settings_from_env(env)
    if settings is not None:
        initialize(settings)
        return settings
    found = detected_environment(env)
    if found is None:
        warn_user(NOTHING_TO_JOIN.format(detected=", ".join(name for name, _ in AUTO_DETECTED)),
                  NotDistributedWarning)
        return None
    try:
        jax.distributed.initialize()
    except RuntimeError as err:
        if "before" not in str(err):
            raise
        raise DistributedError(TOO_LATE.format(why=err)) from err
    return ProcessSettings(f"detected by jax ({found})", jax.process_count(), jax.process_index(), None)


def _gather_text(text: str) -> list[str]:
    """``text`` from every process, in process order (a collective: all must call it)."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(data.size))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [bytes(row[:n]).decode() for row, n in zip(rows, sizes)]


def _broadcast_text(text: str) -> str:
    """Process 0's ``text`` on every process (a collective: all must call it)."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode(), np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
    padded = np.zeros(size, np.uint8)
    padded[: min(size, data.size)] = data[:size]
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(padded))).decode()


def agree_on_plan(plan, in_tree, out_tree):
    """The plan every process will run: its own when all processes chose the same one
    (the search is deterministic, so they should), else process 0's, with a warning.

    A collective: in a multi-process run every process calls it, in the same order.
    """
    if jax.process_count() == 1:
        return plan
    from shardsearch.apply.plan_io import plan_to_dict
    from shardsearch.plan import Plan

    keys = _gather_text(f"{plan.program_hash} {plan.fingerprint()}")
    hashes = sorted({k.split()[0] for k in keys})
    if len(hashes) > 1:
        raise PlanError(PROGRAMS_DIFFER.format(hashes=", ".join(hashes)))
    if len(set(keys)) == 1:
        return plan
    warn_user(PLANS_DIFFER.format(fingerprints=", ".join(k.split()[1] for k in keys)))
    chosen = Plan.from_dict(json.loads(_broadcast_text(json.dumps(plan_to_dict(plan)))), "process 0's plan")
    return chosen.with_trees(in_tree, out_tree)
