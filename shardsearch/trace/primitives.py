"""Every primitive this jax can bind in a step, read from jax's own rule tables.

A primitive that can reach a compiled program has a lowering; one that is discharged or
rewritten before lowering (Refs, hijax boxes) has a JVP rule. Their union, after
importing the modules a training step may bind primitives from, is what the planner must
cover (tests/test_primitive_coverage.py): a new jax release that adds a primitive shows
up here, not in a user's plan.
"""

from __future__ import annotations

import importlib

# Modules whose primitives register on import and that a training step may use beyond
# `import jax` (Pallas kernels appear in steps as pallas_call).
STEP_MODULES = ("jax", "jax.numpy", "jax.scipy.linalg", "jax.scipy.special", "jax.nn", "jax.random",
                "jax.experimental.pallas")


def known_primitives() -> frozenset[str]:
    """Names of every primitive with a lowering or a JVP rule once STEP_MODULES are imported."""
    for name in STEP_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional part missing from this install
            continue
    import jax.extend.core.primitives as public
    from jax._src.interpreters import ad, mlir  # the one place we read jax internals

    names = {p.name for p in mlir._lowerings}
    names |= {p.name for table in mlir._platform_specific_lowerings.values() for p in table}
    names |= {p.name for p in ad.primitive_jvps}
    names |= {p.name for p in vars(public).values() if hasattr(p, "bind") and hasattr(p, "name")}
    return frozenset(names)
