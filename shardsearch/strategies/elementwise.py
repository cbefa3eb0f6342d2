"""n-ary elementwise ops: operands follow the output's layout."""

from __future__ import annotations

from cost_model.mesh import MeshShape, Spec

from shardsearch.strategies.base import OpView, Strategy, register
from shardsearch.strategies.specs import enumerate_specs, io_bytes, local_elements, spec_name

ELEMENTWISE = frozenset("""
add sub mul div rem max min pow atan2 nextafter neg sign floor ceil round abs exp exp2 log
log1p expm1 tanh logistic rsqrt sqrt cbrt sin cos tan erf erfc erf_inv integer_pow square
convert_element_type select_n clamp stop_gradient copy copy_p eq ne lt le gt ge and or not
xor is_finite add_any reduce_precision real imag conj shift_left shift_right_logical
shift_right_arithmetic population_count acos acosh asin asinh atan atanh cosh sinh bessel_i0e
bessel_i1e clz complex digamma igamma igamma_grad_a igammac lgamma mulhi polygamma
regularized_incomplete_beta zeta eq_to le_to lt_to name
""".split())


def _operand_spec(shape, out_shape, out_spec: Spec) -> Spec | None:
    if not shape:
        return ()
    if len(shape) != len(out_shape):
        return None  # lax never does this; leave the op to the replicated strategy
    # A size-1 dim broadcast against a larger one cannot be split.
    return tuple(() if n == 1 and m != 1 else d for n, m, d in zip(shape, out_shape, out_spec))


@register(*sorted(ELEMENTWISE))
def elementwise_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    out_shape = op.out_shapes[0]
    result = []
    for out in enumerate_specs(out_shape, mesh):
        ins = tuple(_operand_spec(s, out_shape, out) for s in op.in_shapes)
        if any(s is None for s in ins):
            return []
        outs = (out,) * len(op.out_shapes)
        result.append(Strategy(spec_name(out), ins, outs, (), local_elements(out_shape, out, mesh),
                               io_bytes(op, ins, outs, mesh)))
    return result


@register("bitcast_convert_type")
def bitcast_convert_type_rule(op: OpView, mesh: MeshShape) -> list[Strategy]:
    """Elementwise when both dtypes are as wide; otherwise the narrower side has one more
    (trailing) dim holding the pieces of one wide element: it stays whole."""
    shape, out_shape = op.in_shapes[0], op.out_shapes[0]
    if len(shape) == len(out_shape):
        return elementwise_rule(op, mesh)
    lead = shape if len(shape) < len(out_shape) else out_shape
    result = []
    for spec in enumerate_specs(lead, mesh):
        ins, outs = (spec + ((),) * (len(shape) - len(lead)),), (spec + ((),) * (len(out_shape) - len(lead)),)
        result.append(Strategy(f"bitcast {spec_name(spec)}", ins, outs, (), local_elements(lead, spec, mesh),
                               io_bytes(op, ins, outs, mesh)))
    return result
