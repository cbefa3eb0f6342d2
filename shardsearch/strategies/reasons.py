"""Primitives without a strategy rule, each with the reason in one line.

Either replicated is the only layout shardsearch can claim correct for them, or the
planner never sees them as operators (the trace inlines them, or they only occur inside
an operator it keeps whole, such as shard_map or a Pallas kernel). Every primitive
jax can bind has a rule or a reason here (tests/test_primitive_coverage.py).
"""

from __future__ import annotations

from shardsearch.strategies.base import register_reason

INLINED = "inlined by the trace: the planner sees the operators of its body, not this equation"
register_reason(INLINED, "jit", "pjit", "closed_call", "core_call", "call", "remat", "remat2", "checkpoint",
                "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_vmap_call", "linear_call",
                "remat_opt", "custom_linear_solve", "scan", "cond", "while", "eval_jaxpr")

register_reason("a mutable Ref made in the step: the trace discharges Refs into values, as jax.jit does",
                "new_ref", "empty_ref", "free_ref", "get", "swap", "addupdate", "freeze", "accum_grad_in_ref")

register_reason(
    "a collective over mesh axes the user manages by hand: bound only inside shard_map (planned whole, "
    "with its declared layouts) or on Explicit axes",
    "all_gather", "all_gather_done", "all_gather_invariant", "all_gather_reduced", "all_gather_reduced_start",
    "all_gather_start", "all_to_all", "all_to_all_done", "all_to_all_start", "axis_index", "pbroadcast",
    "pbroadcast_done", "pbroadcast_start", "pmax", "pmin", "ppermute", "ppermute_done", "ppermute_start",
    "precv", "preduced", "psend", "psum", "psum_done", "psum_invariant", "psum_invariant_start", "psum_start",
    "pvary", "ragged_all_to_all", "reduce_scatter", "reduce_scatter_done", "reduce_scatter_start",
    "unreduced_psum", "unreduced_psum_start", "unreduced_reduce_scatter", "unreduced_reduce_scatter_start",
    "reduced_vary_cast_p", "vary_unreduced_cast_p")

register_reason("bound only inside a Pallas kernel, which runs whole as its pallas_call",
                "check", "core_map", "mpmd_map", "multiple_of", "reciprocal", "run_scoped",
                "with_memory_space_constraint", "broadcast_to", "pin", "unpin", "create_linear", "masked_load",
                "masked_swap")

register_reason("a Pallas kernel: its grid and block specs fix what it computes, and XLA cannot split a "
                "custom call (wrap it in shard_map to split it)", "pallas_call")

register_reason("a host callback: jax hands the Python function whole arrays (gathered to one device)",
                "pure_callback", "io_callback", "debug_callback", "debug_print")

register_reason("an opaque custom call (a foreign function, a serialized module, a backend composite): "
                "XLA cannot split what it cannot see into, so it runs on whole arrays",
                "ffi_call", "call_exported", "composite", "cudnn_fusion")

register_reason("its partitioner is a Python callback that sees jax sharding objects, which the planner "
                "cannot run; XLA runs it on whole arrays unless the user's callback says otherwise",
                "custom_partitioning")

register_reason("a GPU-only cuDNN kernel with no CPU lowering to test a rule against: kept whole",
                "dot_product_attention_fwd", "dot_product_attention_bwd", "dot_product_attention_fp8_fwd",
                "dot_product_attention_fp8_bwd", "dot_product_attention_fwd_wrapper",
                "dot_product_attention_bwd_wrapper", "dot_product_attention_fp8_fwd_wrapper",
                "dot_product_attention_fp8_bwd_wrapper", "scaled_matmul", "scaled_matmul_wrapper")

register_reason("XLA's stateful generator: its numbers depend on the whole output shape, so a split "
                "output would draw other numbers", "rng_bit_generator", "rng_uniform")

register_reason("a stateful region over Refs (Pallas, for-loops): discharged and lowered whole",
                "run_state")

register_reason("hijax boxes and logs (jax.experimental.hijax): mutable host-level objects, not arrays",
                "new_box", "box_get", "box_set", "new_log", "log_read", "log_extend", "call_hi_primitive")

register_reason("no array to split: tokens, shape checks and scalars of shape polymorphism",
                "after_all", "create_token", "shape_assertion", "dim_as_value", "dimension_size",
                "platform_index", "empty2")

register_reason("a branch jax proved never runs (it raises if it does): its outputs are never read",
                "unreachable")

register_reason("internal to autodiff: linearization replaces it before a step is traced", "custom_lin")

register_reason("a lax internal that no public jax function binds (tie(x, y) returns y)", "tie")

register_reason("lifts a Python constant into the trace: a traced step holds it as a replicated constant",
                "stage")

register_reason("a conversion to or from an extended dtype that no public jax type uses (PRNG keys have "
                "random_wrap / random_unwrap): kept whole until one can be tested", "to_edtype", "from_edtype")
