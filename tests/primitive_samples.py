"""One small call per primitive jax can bind: ``SAMPLES[name]()`` -> (fn, args).

tests/test_primitive_coverage.py traces each through the planner. A primitive no public
(or reasonably private) call can bind on a CPU-only jax is in NO_SAMPLE, with why.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src.lax import linalg as _linalg  # geqrf / geqp3 are not public
from jax.ad_checkpoint import checkpoint_name
from jax.experimental import layout
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

F = jnp.zeros((8, 4), jnp.float32)
POS = jnp.full((8, 4), 0.5, jnp.float32)
I = jnp.zeros((8, 4), jnp.int32)
U = jnp.zeros((8, 4), jnp.uint32)
SQ = jnp.stack([jnp.eye(4, dtype=jnp.float32) * (2 + i) for i in range(8)])  # 8 SPD 4x4 matrices
KEYS = jax.random.split(jax.random.key(0), 8)

SAMPLES: dict[str, callable] = {}


def sample(*names):
    def deco(make):
        for n in names:
            SAMPLES[n] = functools.partial(make, n) if make.__code__.co_argcount else make
        return make
    return deco


def mesh():
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


# ---- elementwise ------------------------------------------------------------------------

UNARY_FLOAT = ("abs acos acosh asin asinh atan atanh bessel_i0e bessel_i1e cbrt ceil cos cosh digamma erf "
               "erf_inv erfc exp exp2 expm1 floor is_finite lgamma log log1p logistic neg round rsqrt sign sin "
               "sinh sqrt square tan tanh").split()


@sample(*UNARY_FLOAT)
def _unary(name):
    fn = {"erf_inv": lax.erf_inv, "is_finite": lax.is_finite, "bessel_i0e": lax.bessel_i0e,
          "bessel_i1e": lax.bessel_i1e}.get(name) or getattr(lax, name)
    return fn, (POS * 0.5,)


BINARY_FLOAT = "add atan2 div igamma igammac max min mul nextafter pow rem sub polygamma zeta igamma_grad_a".split()


@sample(*BINARY_FLOAT)
def _binary(name):
    fn = {"polygamma": lambda a, x: lax.polygamma(jnp.ones_like(a), x),
          "igamma_grad_a": lambda a, x: jax.grad(lambda a: lax.igamma(a, x).sum())(a)}.get(name) or getattr(lax, name)
    return fn, (POS + 1, POS)


INTEGER = "and or xor not shift_left shift_right_logical shift_right_arithmetic population_count clz mulhi".split()
COMPARE = "eq ne lt le gt ge".split()


@sample(*INTEGER)
def _integer(name):
    fn = {"not": lambda x, y: lax.bitwise_not(x), "and": lax.bitwise_and, "or": lax.bitwise_or,
          "xor": lax.bitwise_xor, "population_count": lambda x, y: lax.population_count(x),
          "clz": lambda x, y: lax.clz(x),
          "mulhi": lambda x, y: jax._src.lax.lax.mulhi_p.bind(x, y)}.get(name) or getattr(lax, name)
    return fn, (U + 3, U + 1)


@sample(*COMPARE)
def _compare(name):
    return getattr(lax, name), (F, POS)


SAMPLES.update({
    "eq_to": lambda: (lambda x, y: jax._src.lax.lax.eq_to_p.bind(x, y), (I, I + 1)),
    "le_to": lambda: (lambda x, y: jax._src.lax.lax.le_to_p.bind(x, y), (I, I + 1)),
    "lt_to": lambda: (lambda x, y: jax._src.lax.lax.lt_to_p.bind(x, y), (I, I + 1)),
    "add_any": lambda: (jax.grad(lambda x: (x * x + jnp.sin(x)).sum()), (F,)),
    "integer_pow": lambda: (lambda x: x ** 3, (F,)),
    "convert_element_type": lambda: (lambda x: x.astype(jnp.bfloat16), (F,)),
    "bitcast_convert_type": lambda: (lambda x: lax.bitcast_convert_type(x, jnp.uint32), (F,)),
    "reduce_precision": lambda: (lambda x: lax.reduce_precision(x, 5, 10), (F,)),
    "select_n": lambda: (lambda c, x: lax.select_n(c, x, -x), (I > 0, F)),
    "clamp": lambda: (lambda x: lax.clamp(-1.0, x, 1.0), (F,)),
    "stop_gradient": lambda: (jax.grad(lambda x: (x * lax.stop_gradient(x)).sum()), (F,)),
    "copy": lambda: (lambda x: jnp.array(x, copy=True) + lax.copy_p.bind(x), (F,)),
    "complex": lambda: (lambda x, y: lax.complex(x, y), (F, POS)),
    "real": lambda: (lambda x: lax.real(x * 1j), (F,)),
    "imag": lambda: (lambda x: lax.imag(x * 1j), (F,)),
    "conj": lambda: (lambda x: lax.conj(x * 1j).real, (F,)),
    "regularized_incomplete_beta": lambda: (lambda a, x: lax.betainc(a, a, x), (POS + 1, POS)),
    "name": lambda: (lambda x: checkpoint_name(x * 2, "h"), (F,)),
    "tie": lambda: (lambda x, y: jax._src.lax.lax.tie_p.bind(x, y), (F, POS)),
})

# ---- layout, slicing, reductions ---------------------------------------------------------

V = jnp.zeros((8, 6, 4), jnp.float32)
SAMPLES.update({
    "broadcast_in_dim": lambda: (lambda x: jnp.broadcast_to(x, (2, 8, 4)), (F,)),
    "reshape": lambda: (lambda x: x.reshape(4, 8), (F,)),
    "transpose": lambda: (lambda x: x.T, (F,)),
    "squeeze": lambda: (lambda x: x[:, None].squeeze(1), (F,)),
    "rev": lambda: (lambda x: x[::-1], (F,)),
    "pad": lambda: (lambda x: jnp.pad(x, ((0, 0), (1, 1))), (F,)),
    "concatenate": lambda: (lambda x: jnp.concatenate([x, x], 1), (F,)),
    "slice": lambda: (lambda x: x[:, 1:3], (F,)),
    "dynamic_slice": lambda: (lambda x, i: lax.dynamic_slice_in_dim(x, i, 2, axis=1), (F, 1)),
    "dynamic_update_slice": lambda: (lambda x, i: lax.dynamic_update_slice_in_dim(x, x[:, :2], i, axis=1), (F, 1)),
    "iota": lambda: (lambda x: x + jnp.arange(4.0), (F,)),
    "stack": lambda: (lambda x: jnp.stack([x, x + 1], axis=1), (F,)),
    "unstack": lambda: (lambda x: sum(jnp.unstack(x, axis=1)), (F,)),
    "split": lambda: (lambda x: jnp.split(x, 2, axis=1)[0], (F,)),
    "tile": lambda: (lambda x: jnp.tile(x, (1, 2)), (F,)),
    "empty": lambda: (lambda x: x + lax.empty((8, 4), jnp.float32) * 0, (F,)),
    "empty2": lambda: (lambda x: x + jax._src.lax.lax.empty2(jnp.float32, memory_space=jax._src.core.MemorySpace.Device),
                       (F,)),
    "reduce_sum": lambda: (lambda x: x.sum(0), (F,)),
    "reduce_max": lambda: (lambda x: x.max(0), (F,)),
    "reduce_min": lambda: (lambda x: x.min(0), (F,)),
    "reduce_prod": lambda: (lambda x: x.prod(0), (F,)),
    "reduce_and": lambda: (lambda x: (x > 0).all(0), (F,)),
    "reduce_or": lambda: (lambda x: (x > 0).any(0), (F,)),
    "reduce_xor": lambda: (lambda x: lax.reduce_xor_p.bind(x > 0, axes=(0,)), (F,)),
    "reduce": lambda: (lambda x: lax.reduce((x, x), (0.0, 0.0), lambda a, b: (a[0] + b[1], a[1] * b[0]), (0,)), (F,)),
    "argmax": lambda: (lambda x: x.argmax(0), (F,)),
    "argmin": lambda: (lambda x: x.argmin(0), (F,)),
    "cumsum": lambda: (lambda x: jnp.cumsum(x, 1), (F,)),
    "cumprod": lambda: (lambda x: jnp.cumprod(x, 1), (F,)),
    "cummax": lambda: (lambda x: lax.cummax(x, 1), (F,)),
    "cummin": lambda: (lambda x: lax.cummin(x, 1), (F,)),
    "cumlogsumexp": lambda: (lambda x: lax.cumlogsumexp(x, 1), (F,)),
    "sort": lambda: (lambda x: jnp.sort(x, 1), (F,)),
    "top_k": lambda: (lambda x: lax.top_k(x, 2)[0], (F,)),
    "approx_top_k": lambda: (lambda x: lax.approx_max_k(x, 2)[0], (F,)),
    "reduce_window_sum": lambda: (lambda x: lax.reduce_window(x, 0.0, lax.add, (1, 2, 1), (1, 2, 1), "VALID"), (V,)),
    "reduce_window_max": lambda: (lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 1), (1, 2, 1), "VALID"),
                                  (V,)),
    "reduce_window_min": lambda: (lambda x: lax.reduce_window(x, jnp.inf, lax.min, (1, 2, 1), (1, 2, 1), "VALID"),
                                  (V,)),
    "reduce_window": lambda: (lambda x: lax.reduce_window(x, 1.0, lax.mul, (1, 2, 1), (1, 1, 1), "VALID"), (V,)),
    "select_and_scatter_add": lambda: (jax.grad(lambda x: lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 2, 1), (1, 2, 1), "VALID").sum()), (V,)),
    "select_and_gather_add": lambda: (jax.jacfwd(lambda x: lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 2, 1), (1, 2, 1), "VALID").sum()), (jnp.zeros((2, 6, 1)),)),
    "select_and_scatter": lambda: (lambda s, x: jax._src.lax.windowed_reductions._select_and_scatter(
        x, lax.ge, (1, 2, 1), (1, 2, 1), ((0, 0),) * 3, s, 0.0, lax.add), (jnp.zeros((8, 3, 4)), V)),
    "gather": lambda: (lambda e, i: e[i], (F, jnp.zeros((6,), jnp.int32))),
    "scatter-add": lambda: (lambda x, i: x.at[i].add(1.0), (F, jnp.zeros((3,), jnp.int32))),
    "scatter-sub": lambda: (lambda x, i: x.at[i].subtract(1.0), (F, jnp.zeros((3,), jnp.int32))),
    "scatter-mul": lambda: (lambda x, i: x.at[i].multiply(2.0), (F, jnp.zeros((3,), jnp.int32))),
    "scatter-min": lambda: (lambda x, i: x.at[i].min(0.0), (F, jnp.zeros((3,), jnp.int32))),
    "scatter-max": lambda: (lambda x, i: x.at[i].max(0.0), (F, jnp.zeros((3,), jnp.int32))),
    "scatter": lambda: (lambda x, i: x.at[i].set(1.0), (F, jnp.zeros((3,), jnp.int32))),
})

# ---- matmuls, convolutions, linear algebra, fft -------------------------------------------

SAMPLES.update({
    "dot_general": lambda: (lambda x, w: x @ w, (F, F.T)),
    "ragged_dot_general": lambda: (lambda x, w: lax.ragged_dot(x, w, jnp.array([4, 4], jnp.int32)),
                                   (F, jnp.zeros((2, 4, 6)))),
    "scaled_dot": lambda: (lambda a, b, sa, sb: lax.scaled_dot(
        a, b, lhs_scale=sa, rhs_scale=sb, dimension_numbers=(((1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32),
        (jnp.zeros((8, 64)), jnp.zeros((4, 64)), jnp.ones((8, 2)), jnp.ones((4, 2)))),
    "conv_general_dilated": lambda: (lambda x, w: lax.conv_general_dilated(x, w, (1,), "SAME"),
                                     (jnp.zeros((8, 2, 6)), jnp.zeros((4, 2, 3)))),
    "cholesky": lambda: (jnp.linalg.cholesky, (SQ,)),
    "cholesky_update": lambda: (lambda a, v: lax.linalg.cholesky_update(a, v), (SQ[0], jnp.ones(4))),
    "eigh": lambda: (lambda a: jnp.linalg.eigh(a)[0], (SQ,)),
    "eig": lambda: (lambda a: jnp.linalg.eig(a)[0].real, (SQ,)),
    "svd": lambda: (lambda a: jnp.linalg.svd(a)[1], (SQ,)),
    "qr": lambda: (lambda a: lax.linalg.qr(a)[1], (SQ,)),
    "geqrf": lambda: (lambda a: _linalg.geqrf(a)[0], (SQ,)),
    "geqp3": lambda: (lambda a: _linalg.geqp3(a, jnp.zeros((8, 4), jnp.int32))[0], (SQ,)),
    "householder_product": lambda: (lambda a: lax.linalg.householder_product(a, a[:, 0]), (SQ,)),
    "ormqr": lambda: (lambda a: lax.linalg.ormqr(a, a[:, 0], a), (SQ,)),
    "lu": lambda: (lambda a: lax.linalg.lu(a)[0], (SQ,)),
    "lu_pivots_to_permutation": lambda: (lambda p: lax.linalg.lu_pivots_to_permutation(p, 4),
                                         (jnp.zeros((8, 4), jnp.int32),)),
    "triangular_solve": lambda: (lambda a, b: lax.linalg.triangular_solve(a, b, left_side=True), (SQ, SQ)),
    "tridiagonal_solve": lambda: (lambda d, b: lax.linalg.tridiagonal_solve(d * 0, d + 2, d * 0, b),
                                  (jnp.zeros((8, 4)), jnp.zeros((8, 4, 3)))),
    "tridiagonal": lambda: (lambda a: lax.linalg.tridiagonal(a)[1], (SQ,)),
    "hessenberg": lambda: (lambda a: lax.linalg.hessenberg(a)[0], (SQ,)),
    "schur": lambda: (lambda a: lax.linalg.schur(a)[0], (SQ,)),
    "symmetric_product": lambda: (lambda a, c: lax.linalg.symmetric_product(a, c), (SQ, SQ)),
    "fft": lambda: (lambda x: jnp.fft.rfft(x).real, (F,)),
})

# ---- random numbers --------------------------------------------------------------------------

SAMPLES.update({
    "random_bits": lambda: (lambda k: jax.random.bits(k, (8, 4)), (jax.random.key(0),)),
    "random_split": lambda: (lambda k: jax.random.key_data(jax.random.split(k, 8)), (jax.random.key(0),)),
    "random_fold_in": lambda: (lambda k: jax.random.key_data(jax.random.fold_in(k, 3)), (jax.random.key(0),)),
    "random_seed": lambda: (lambda s: jax.random.key_data(jax.random.key(s)), (jnp.zeros((), jnp.int32),)),
    "random_wrap": lambda: (lambda d: jax.random.key_data(jax.random.wrap_key_data(d)), (jnp.zeros((8, 2), jnp.uint32),)),
    "random_unwrap": lambda: (jax.random.key_data, (KEYS,)),
    "random_clone": lambda: (lambda k: jax.random.key_data(jax.random.clone(k)), (KEYS,)),
    "random_gamma": lambda: (lambda k, a: jax.vmap(jax.random.gamma)(k, a), (KEYS, jnp.ones(8))),
    # the hashes and counters random_bits lowers to, called as a key implementation does
    "threefry2x32": lambda: (lambda k, x: jax.extend.random.threefry_2x32(k, x), (jnp.zeros((2,), jnp.uint32), U)),
    "threefry4x32": lambda: (lambda k: _bits("threefry4x32")(k, bit_width=32, shape=(8, 4)),
                             (jnp.zeros((4,), jnp.uint32),)),
    "philox2x32": lambda: (lambda k: _bits("philox2x32")(k, bit_width=32, shape=(8, 4)),
                           (jnp.zeros((1,), jnp.uint32),)),
    "philox4x32": lambda: (lambda k: _bits("philox4x32")(k, bit_width=32, shape=(8, 4)),
                           (jnp.zeros((2,), jnp.uint32),)),
    "iota_2x32_shape": lambda: (lambda x: jax._src.random.prng.iota_2x32_shape((8, 4))[0] + x, (U,)),
    "rng_bit_generator": lambda: (lambda k: lax.rng_bit_generator(k, (8, 4))[1], (jnp.zeros((4,), jnp.uint32),)),
    "rng_uniform": lambda: (lambda x: lax.rng_uniform(0.0, 1.0, (8, 4)) + x, (F,)),
})

def _bits(impl):
    import importlib

    return getattr(importlib.import_module(f"jax._src.random.{impl}"), f"{impl}_random_bits")


# ---- control flow, calls, custom derivatives ----------------------------------------------------


def _custom_vmap_fn():
    @jax.custom_batching.custom_vmap
    def f(x):
        return jnp.sin(x)

    f.def_vmap(lambda size, in_batched, x: (jnp.sin(x), in_batched[0]))
    return f, (F,)


def _linear_call_fn():
    def f(x):
        return jax.custom_derivatives.linear_call(lambda _, t: t * 2, lambda _, t: t * 2, (), x)

    return f, (F,)


def _remat_opt_fn():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),), optimize_remat=True)
    return f, (F,)


def _custom_vjp():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))
    return f, (F,)


SAMPLES.update({
    "jit": lambda: (jax.jit(lambda x: x * 2), (F,)),
    "closed_call": lambda: (lambda x: jax._src.lax.eval_jaxpr.eval_jaxpr_p.bind(
        x, jaxpr=jax.make_jaxpr(jnp.sin)(x))[0], (F,)),
    "call": lambda: (lambda x: jax._src.core.call_p.bind(x, subfuns=(jax._src.linear_util.wrap_init(
        lambda y: [jnp.sin(y)], debug_info=jax._src.api_util.debug_info("call", jnp.sin, (x,), {})),))[0], (F,)),
    "remat2": lambda: (jax.grad(lambda x: jax.checkpoint(jnp.sin)(x).sum()), (F,)),
    "custom_jvp_call": lambda: (jax.nn.relu, (F,)),
    "custom_vjp_call": _custom_vjp,
    "custom_vmap_call": _custom_vmap_fn,
    "linear_call": _linear_call_fn,
    "remat_opt": lambda: (jax.grad(lambda x: _remat_opt_fn()[0](x).sum()), (F,)),
    "custom_linear_solve": lambda: (lambda a, b: jnp.linalg.solve(a, b), (SQ, SQ)),
    "scan": lambda: (lambda x: lax.scan(lambda c, r: (c + r, c), jnp.zeros(4), x)[1], (F,)),
    "cond": lambda: (lambda x: lax.cond(x.sum() > 0, jnp.sin, jnp.cos, x), (F,)),
    "while": lambda: (lambda x: lax.while_loop(lambda c: c.sum() < 100, lambda c: c * 2 + 1, x), (F,)),
    "platform_index": lambda: (lambda x: lax.platform_dependent(x, cpu=jnp.sin, default=jnp.cos), (F,)),
    "optimization_barrier": lambda: (lambda x: lax.optimization_barrier((x * 2, x.sum()))[0], (F,)),
    "new_ref": lambda: (_ref_fn, (F,)),
    "get": lambda: (_ref_fn, (F,)),
    "swap": lambda: (_ref_fn, (F,)),
    "addupdate": lambda: (_ref_fn, (F,)),
    "freeze": lambda: (lambda x: jax.ref.freeze(jax.new_ref(x * 2)), (F,)),
    "empty_ref": lambda: (_empty_ref_fn, (F,)),
    "free_ref": lambda: (_empty_ref_fn, (F,)),
    "unreachable": lambda: (_unreachable_fn, (F,)),
})


def _ref_fn(x):
    r = jax.new_ref(x)
    r[...] = r[...] * 2
    jax.ref.addupdate(r, (slice(1, 3),), jnp.ones((2, 4)))
    return r[...]


def _empty_ref_fn(x):
    r = jax.empty_ref(jax.typeof(x))
    r[...] = x * 2
    y = r[...]
    jax.free_ref(r)
    return y


def _unreachable_fn(x):
    from jax._src.custom_derivatives import unreachable_p

    return unreachable_p.bind(x, out_avals=(jax.typeof(x),), exc_type=ValueError, message="never")[0]


# ---- sharding, placement, debugging ------------------------------------------------------------


def _named(spec):
    return jax.sharding.NamedSharding(mesh(), spec)


def _reshard_fn():
    explicit = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    return lambda x: jax.sharding.reshard(x * 2, jax.sharding.NamedSharding(explicit, P("data"))), (F,)


SAMPLES.update({
    "sharding_constraint": lambda: (lambda x: lax.with_sharding_constraint(x * 2, _named(P("data"))), (F,)),
    "device_put": lambda: (lambda x: jax.device_put(x * 2, _named(P(None, "model"))), (F,)),
    "reshard": _reshard_fn,
    "layout_constraint": lambda: (lambda x: layout.with_layout_constraint(x * 2, layout.Layout((0, 1))), (F,)),
    "inspect_sharding": lambda: (lambda x: (jax.debug.inspect_array_sharding(x, callback=lambda s: None), x * 2)[1],
                                 (F,)),
    "dce_sink": lambda: (lambda x: (jax._src.lax.lax.dce_sink_p.bind(x), x * 2)[1], (F,)),
    "debug_callback": lambda: (lambda x: (jax.debug.callback(lambda v: None, x), x * 2)[1], (F,)),
    "debug_print": lambda: (lambda x: (jax.debug.print("{}", x), x * 2)[1], (F,)),
    "pure_callback": lambda: (lambda x: jax.pure_callback(np.sin, jax.typeof(x), x), (F,)),
    "io_callback": lambda: (lambda x: jax.experimental.io_callback(np.sin, jax.typeof(x), x), (F,)),
    "ffi_call": lambda: (lambda x: jax.ffi.ffi_call("no_such_target", jax.typeof(x))(x), (F,)),
    "composite": lambda: (lambda x: lax.composite(lambda y: jnp.sin(y), name="my.sin")(x), (F,)),
    "custom_partitioning": lambda: (_custom_partitioning_fn(), (F,)),
    "call_exported": lambda: (_call_exported_fn(), (F,)),
})


def _custom_partitioning_fn():
    from jax.experimental.custom_partitioning import custom_partitioning

    @custom_partitioning
    def f(x):
        return jnp.sin(x)

    f.def_partition(partition=lambda mesh, arg_shapes, result_shape: (mesh, jnp.sin, arg_shapes[0].sharding,
                                                                        (arg_shapes[0].sharding,)),
                    sharding_rule="i j -> i j")
    return f


def _call_exported_fn():
    from jax import export

    return export.export(jax.jit(jnp.sin))(jax.ShapeDtypeStruct((8, 4), jnp.float32)).call


# ---- shard_map and the collectives inside it -----------------------------------------------------


def _in_shard_map(body, spec_in=P("data", "model"), spec_out=P("data", "model"), check_vma=False):
    """Without check_vma (jax's varying-axes types) psum / all_gather bind themselves, not
    their *_invariant forms."""
    return lambda: (jax.shard_map(body, mesh=mesh(), in_specs=spec_in, out_specs=spec_out, check_vma=check_vma),
                    (F,))


from jax._src.lax import parallel as _par  # noqa: E402  (async and reduced-type collectives are not public)

SAMPLES.update({
    "shard_map": _in_shard_map(lambda x: x * 2),
    "psum": _in_shard_map(lambda x: lax.psum(x, "model"), spec_out=P("data")),
    "pmax": _in_shard_map(lambda x: lax.pmax(x, "model"), spec_out=P("data")),
    "pmin": _in_shard_map(lambda x: lax.pmin(x, "model"), spec_out=P("data")),
    "all_gather": _in_shard_map(lambda x: lax.all_gather(x, "model", axis=1, tiled=True), spec_out=P("data")),
    "all_to_all": _in_shard_map(lambda x: lax.all_to_all(x, "data", 0, 0, tiled=True)),
    "reduce_scatter": _in_shard_map(lambda x: lax.psum_scatter(x, "data", scatter_dimension=0, tiled=True),
                                    spec_in=P(None, "model")),
    "ppermute": _in_shard_map(lambda x: lax.ppermute(x, "model", [(i, (i + 1) % 4) for i in range(4)])),
    "axis_index": _in_shard_map(lambda x: x + lax.axis_index("model")),
    "pbroadcast": _in_shard_map(lambda x: lax.pbroadcast(x, ("model",), 0)),
    "pvary": _in_shard_map(lambda x: lax.pcast(jnp.ones((), jnp.float32), ("model",), to="varying") + x,
                           check_vma=True),
    "psum_invariant": _in_shard_map(lambda x: lax.psum(x, "model"), spec_out=P("data"), check_vma=True),
    "all_gather_invariant": _in_shard_map(lambda x: _par.all_gather_invariant(x, "model", axis=1, tiled=True),
                                          spec_out=P("data"), check_vma=True),
    "ragged_all_to_all": _in_shard_map(lambda x: lax.ragged_all_to_all(
        x, jnp.zeros_like(x), *(jnp.zeros((4,), jnp.int32),) * 4, axis_name="model")),
})
for _name, _start, _kw, _out in [
    ("psum", _par.psum_start, {}, P("data")),
    ("all_gather", _par.all_gather_start, {"axis": 1, "tiled": True}, P("data")),
    ("reduce_scatter", _par.psum_scatter_start, {"scatter_dimension": 0, "tiled": True}, P("data", "model")),
    ("all_to_all", _par.all_to_all_start, {"split_axis": 0, "concat_axis": 0, "tiled": True}, P("data", "model")),
    ("pbroadcast", _par.pbroadcast_start, {"source": 0}, P("data", "model")),
    ("ppermute", _par.ppermute_start, {"perm": [(i, (i + 1) % 4) for i in range(4)]}, P("data", "model")),
]:
    _body = (lambda s, kw: lambda x: s(x, ("model",), **kw).done())(_start, _kw)
    SAMPLES[f"{_name}_start"] = SAMPLES[f"{_name}_done"] = _in_shard_map(_body, spec_out=_out)

# ---- Pallas -------------------------------------------------------------------------------------------


def _pallas_fn():
    from jax.experimental import pallas as pl

    def kernel(x_ref, o_ref):
        o_ref[...] = x_ref[...] * 2

    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((8, 4), jnp.float32), interpret=True), (F,)


SAMPLES["pallas_call"] = _pallas_fn

NO_SAMPLE = {
    **{n: "GPU-only cuDNN kernel: jax refuses to trace it without a cuDNN GPU" for n in (
        "dot_product_attention_fwd", "dot_product_attention_bwd", "dot_product_attention_fp8_fwd",
        "dot_product_attention_fp8_bwd", "dot_product_attention_fwd_wrapper", "dot_product_attention_bwd_wrapper",
        "dot_product_attention_fp8_fwd_wrapper", "dot_product_attention_fp8_bwd_wrapper", "scaled_matmul",
        "scaled_matmul_wrapper", "cudnn_fusion")},
    **{n: "bound only inside a Pallas kernel (TPU / GPU lowerings)" for n in (
        "check", "core_map", "mpmd_map", "multiple_of", "reciprocal", "run_scoped", "with_memory_space_constraint",
        "broadcast_to", "pin", "unpin", "create_linear", "masked_load", "masked_swap", "run_state")},
    **{n: "hijax boxes and logs: an experimental API with no stable public entry point" for n in (
        "new_box", "box_get", "box_set", "new_log", "log_read", "log_extend", "call_hi_primitive")},
    "eval_jaxpr": "staged into a jaxpr as closed_call (the closed_call sample binds it)",
    "stage": "lifts a Python constant into the trace: a traced step holds it as a constant",
    "to_edtype": "converts to an extended dtype other than PRNG keys: no public jax type binds it",
    "from_edtype": "converts from an extended dtype other than PRNG keys: no public jax type binds it",
    **{n: "needs the Explicit-axis reduced / unreduced types inside shard_map" for n in (
        "all_gather_reduced", "all_gather_reduced_start", "preduced", "unreduced_psum", "unreduced_psum_start",
        "unreduced_reduce_scatter", "unreduced_reduce_scatter_start", "reduced_vary_cast_p",
        "vary_unreduced_cast_p", "psum_invariant_start")},
    "custom_lin": "internal to jax.linearize: replaced before any jaxpr is returned",
    "accum_grad_in_ref": "internal to differentiating through Refs",
    "psend": "a send without its receive deadlocks tracing checks: covered with precv by the same reason",
    "precv": "a receive needs a matching psend on another device: no single-program sample",
    "after_all": "tokens of ordered effects: bound only while lowering",
    "create_token": "tokens of ordered effects: bound only while lowering",
    "shape_assertion": "bound only by jax.export with symbolic shapes",
    "dim_as_value": "bound only by jax.export with symbolic shapes",
    "dimension_size": "bound only by jax.export with symbolic shapes",
}
