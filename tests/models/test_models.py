"""Real models get real plans: on a (2, 4) mesh every model of tests/models/ trains
like plain jax.jit (1e-4 relative after 3 steps) and nothing big is left replicated
for want of a strategy rule.

Parameters and optimizer state are compared with rtol 1e-4 and atol 1e-5 (1% of one
Adam step at lr 1e-3): Adam divides by the gradient's own magnitude, so an entry whose
gradient is near zero moves by float noise that a different summation order changes
(seen: 1 of 4096 kernel entries off by 2.7e-6). A wrong sharding is off by far more,
and the losses are compared at rtol 1e-4 as well.

Each model takes 15-40 s here (plan, two compiles, six steps): all are marked slow.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import shardsearch as ss
from models import CASES
from test_numerics import SLOW_COMPUTE

MESH = (2, 4)
# An operator whose outputs are all this small (scalars, per-class sums) may stay
# replicated: splitting it could not pay for the collective.
TRIVIAL_ELEMENTS = 64


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) for n in sorted(CASES)])
def planned(request):
    """(case, sharded step, plan), planned once per model for the tests below."""
    case = CASES[request.param]()
    # Compute so slow next to the links that these small shapes are worth splitting.
    step = ss.auto(case.train_step, mesh=MESH, cluster=SLOW_COMPUTE)
    return case, step, step.plan_for(*case.args)


def run_steps(step, args, n=3):
    params, opt_state, batch = args
    losses = []
    for _ in range(n):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
    return params, opt_state, np.array(losses)


def assert_close_with_paths(got, want, rtol=1e-4, atol=1e-5):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(path))


def test_sharded_step_matches_jit(planned):
    case, step, plan = planned
    assert any(any(d) for d in plan.flat_in_specs), "expected a plan that splits something"
    got = run_steps(step, case.args)
    want = run_steps(jax.jit(case.train_step), case.args)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)
    assert_close_with_paths(got[0], want[0])
    assert_close_with_paths(got[1], want[1])


def test_no_big_operator_falls_back_to_replicated(planned):
    case, _, plan = planned
    big = [f for f in plan.fallback if max((math.prod(s) for s in f.shapes), default=0) > TRIVIAL_ELEMENTS]
    assert not big, plan.summary()
    if not plan.fallback:
        assert "replicated fallback: none" in plan.summary()
