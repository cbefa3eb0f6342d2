"""What every test model hands to the tests: a train step and concrete arguments."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import optax


@dataclasses.dataclass(frozen=True)
class ModelCase:
    """Attention layers here have no biases (as in PaLM / LLaMA): a key bias gets an exactly
    zero gradient, and Adam turns the float noise standing in for it into +-lr steps
    that differ with any change of summation order, sharded or not."""

    name: str
    # train_step(params, opt_state, batch) -> (params, opt_state, loss); params may carry
    # non-trained state (batch norm statistics) next to the weights
    train_step: Callable
    args: tuple  # concrete (params, opt_state, batch)


def grad_step(loss_fn: Callable, optimizer) -> Callable:
    """The ordinary optax step: loss_fn(params, batch) -> scalar loss."""

    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def token_batch(key, batch: int, seq: int, vocab: int) -> dict[str, Any]:
    tokens = jax.random.randint(key, (batch, seq + 1), 0, vocab)
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:]}
