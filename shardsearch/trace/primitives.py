"""Every primitive this jax can bind in a step, read from jax's own rule tables.

A primitive that can reach a compiled program has a lowering; one that is discharged or
rewritten before lowering (Refs, hijax boxes) has a JVP rule. Their union, after
importing the modules a training step may bind primitives from, is what the planner must
cover (tests/test_primitive_coverage.py): a new jax release that adds a primitive shows
up here, not in a user's plan. Only jax's own primitives count (those a jax module holds
as an attribute): libraries that define their own (Equinox, say) register them in the
same tables, and the third-party smoke suite (benchmarks/thirdparty) reports those.
"""

from __future__ import annotations

import importlib
import sys

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

    tabled = set(mlir._lowerings) | set(ad.primitive_jvps)
    tabled |= {p for table in mlir._platform_specific_lowerings.values() for p in table}
    tabled |= {p for p in vars(public).values() if hasattr(p, "bind") and hasattr(p, "name")}
    return frozenset(p.name for p in tabled if id(p) in _held_by_jax())


def _held_by_jax() -> set[int]:
    """Ids of the objects jax's (and jaxlib's) modules hold as attributes."""
    held = set()
    for name, module in list(sys.modules.items()):
        if module is not None and (name in ("jax", "jaxlib") or name.startswith(("jax.", "jaxlib."))):
            held.update(id(v) for v in list(vars(module).values()))
    return held
