"""Start N local processes that form one ``jax.distributed`` run (for testing multi-host).

Recipe: a worker script joins the run, then uses ``shardsearch.auto`` unchanged::

    import jax
    from shardsearch.runtime.distributed import initialize_from_env
    initialize_from_env()            # right after `import jax`; a no-op when not launched

    import shardsearch as ss
    mesh = jax.make_mesh((2, 4), ("data", "model"))   # spans every process's devices
    step = ss.auto(train_step, mesh=mesh)
    params, opt_state, loss = step(params, opt_state, batch)

and is started with::

    shardsearch launch -n 2 --local-devices 4 -- python -m examples.multihost_gpt

Each process gets ``SHARDSEARCH_COORDINATOR`` (127.0.0.1 and a free port),
``SHARDSEARCH_NUM_PROCESSES``, ``SHARDSEARCH_PROCESS_ID`` and, with ``--local-devices``,
``SHARDSEARCH_LOCAL_DEVICES``; ``initialize_from_env`` turns these into
``jax.config.update('jax_num_cpu_devices', k)``,
``jax.config.update('jax_cpu_collectives_implementation', 'gloo')`` and
``jax.distributed.initialize(coordinator_address, num_processes, process_id)``, which is
also what to call by hand without the launcher. Every process passes the same full host
arrays (each places only its own shards) or global ``jax.Array``s it built, e.g. with
``jax.make_array_from_process_local_data(NamedSharding(step.mesh, P("data")), local_rows)``;
results come back as global arrays. Every process computes the same plan (the search is
deterministic; if plans ever differ, process 0's is used everywhere, with a warning).

On real hosts, run one process per host with the same variables (or call
``jax.distributed.initialize`` yourself) instead of this launcher.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Mapping, Sequence, TextIO

from shardsearch.errors import DistributedError
from shardsearch.runtime.distributed import ENV_COORDINATOR, ENV_LOCAL_DEVICES, ENV_NUM_PROCESSES, ENV_PROCESS_ID

LOOPBACK = "127.0.0.1"
EXIT_TIMEOUT = 124
GRACE_S = 5.0  # how long a process may take to stop after SIGTERM before SIGKILL

NO_COMMAND = "launch needs a command to run, e.g. `shardsearch launch -n 2 -- python train.py`"
BAD_COUNT = "num_processes={n} must be >= 1 (the number of local processes to start)"
BAD_LOCAL_DEVICES = "local_devices={n} must be >= 1 (CPU devices each process shows), or None"
HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_env(
    base: Mapping[str, str], *, coordinator: str, num_processes: int, process_id: int, local_devices: int | None
) -> dict[str, str]:
    """The environment of one worker: ``base`` plus the settings ``initialize_from_env`` reads."""
    env = dict(base)
    env.update(
        {ENV_COORDINATOR: coordinator, ENV_NUM_PROCESSES: str(num_processes), ENV_PROCESS_ID: str(process_id)}
    )
    if local_devices is not None:
        env[ENV_LOCAL_DEVICES] = str(local_devices)
        # an inherited fake-device count (e.g. from a test session) would fight the per-process one
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(HOST_DEVICE_FLAG)]
        env["XLA_FLAGS"] = " ".join(flags)
    env.setdefault("PYTHONUNBUFFERED", "1")  # so lines stream as they are printed
    return env


def _stream(proc: subprocess.Popen, prefix: str, out: TextIO, lock: threading.Lock) -> None:
    for line in proc.stdout:
        with lock:
            out.write(prefix + line)
            out.flush()


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """Stop the processes still running: SIGTERM, then SIGKILL after a grace period."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in alive:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(
    command: Sequence[str],
    num_processes: int,
    *,
    local_devices: int | None = None,
    port: int | None = None,
    timeout_s: float | None = None,
    out: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``command`` as ``num_processes`` processes of one ``jax.distributed`` run on this machine.

    Their output (stdout and stderr together) is streamed line by line to ``out``
    (default ``sys.stdout``), each line prefixed with ``[i]``, the process id. Returns 0
    when all succeed; as soon as one fails, the others are stopped and its exit code is
    returned (negative: killed by that signal; ``EXIT_TIMEOUT`` if ``timeout_s`` runs out).
    """
    if not command:
        raise DistributedError(NO_COMMAND)
    if num_processes < 1:
        raise DistributedError(BAD_COUNT.format(n=num_processes))
    if local_devices is not None and local_devices < 1:
        raise DistributedError(BAD_LOCAL_DEVICES.format(n=local_devices))
    out = sys.stdout if out is None else out
    coordinator = f"{LOOPBACK}:{port or free_port()}"
    base = os.environ if env is None else env
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    readers: list[threading.Thread] = []
    try:
        for i in range(num_processes):
            worker_env = process_env(
                base, coordinator=coordinator, num_processes=num_processes, process_id=i, local_devices=local_devices
            )
            proc = subprocess.Popen(
                list(command), env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            )
            procs.append(proc)
            reader = threading.Thread(target=_stream, args=(proc, f"[{i}] ", out, lock), daemon=True)
            reader.start()
            readers.append(reader)
        code = _wait(procs, timeout_s)
    finally:
        _stop(procs)  # on success nothing is left; on failure or Ctrl-C, the rest
        for r in readers:
            r.join(timeout=GRACE_S)
    return code


def _wait(procs: Sequence[subprocess.Popen], timeout_s: float | None) -> int:
    """0 once every process exited 0; a failed process's code as soon as one fails."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        if deadline is not None and time.monotonic() > deadline:
            return EXIT_TIMEOUT
        time.sleep(0.1)
