"""Running plans: multi-process launch on jax.distributed and sharded checkpoints."""
