"""Plan and compile a large model from abstract inputs on a big fake mesh.

    python -m benchmarks.large --config gpt-39B --mesh 8x8 [--cluster h100-8x8-ib]

Nothing is allocated: the parameters, optimizer state and batch are ShapeDtypeStructs.
Prints the time of each stage and the judged step time of the compiled program.
"""

from __future__ import annotations

import argparse
import math
import os
import time


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="gpt")
    ap.add_argument("--config", default="gpt-39B")
    ap.add_argument("--mesh", default="8x8")
    ap.add_argument("--cluster", default="h100-8x8-ib")
    ap.add_argument("--layers", type=int, default=None, help="override the config's depth")
    a = ap.parse_args(argv)
    shape = tuple(int(t) for t in a.mesh.split("x"))
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={math.prod(shape)}").strip()

    import dataclasses

    import shardsearch as ss
    from benchmarks.judge import judge
    from benchmarks.models import get_workload
    from benchmarks.runner import make_mesh
    from cost_model import Cluster

    cluster = Cluster.load(a.cluster)
    t0 = time.perf_counter()
    w = get_workload(a.suite, a.config)
    if a.layers is not None:
        from benchmarks.models import gpt

        w = gpt.make_workload(dataclasses.replace(w.config, layers=a.layers))
    print(f"{w.name}: {w.params_count / 1e9:.2f} B parameters, built in {time.perf_counter() - t0:.1f} s", flush=True)
    # compare=False: plan time is the search's alone, as in earlier results (no recipes priced)
    step = ss.auto(w.train_step, mesh=make_mesh(shape), cluster=cluster, verbose=True, compare=False, pipeline=None)
    t0 = time.perf_counter()
    plan = step.plan_for(*w.args)
    plan_s = time.perf_counter() - t0
    print(plan.summary().split("\n\n")[0], flush=True)
    t0 = time.perf_counter()
    lowered = step.lower(*w.args)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    j = judge(compiled, cluster)
    print(f"plan {plan_s:.1f} s, lower {lower_s:.1f} s, XLA compile {compile_s:.1f} s")
    print(f"predicted {plan.predicted.total_s * 1e3:.1f} ms/step, judged {j.total_s * 1e3:.1f} ms "
          f"(compute {j.compute_s * 1e3:.1f}, comm {j.comm_s * 1e3:.1f}), "
          f"memory {j.memory_bytes / 2**30:.1f} GiB/device of {cluster.memory_bytes / 2**30:.0f}")


if __name__ == "__main__":
    main()
