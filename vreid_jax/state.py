"""The training state and its creation: abstract first, then materialised on the mesh."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vreid_jax import parallel


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes. Model and optimizer are closed over, never stored, so a checkpoint
    holds arrays only."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def create_train_state(
    model,
    tx: optax.GradientTransformation,
    sample_clips,
    *,
    seed: int,
    mesh: jax.sharding.Mesh,
    init_variables=None,
):
    """Initialises the state replicated on `mesh`; returns `(state, state_shardings)`.

    The state is first traced abstractly (`jax.eval_shape`, cheap), which gives the shardings; then a
    jitted init writes it straight onto the devices with those shardings. `init_variables`, when
    given (e.g. ImageNet weights already mapped to the model), replaces the random initialisation.
    """

    def init(key):
        variables = model.init({"params": key, "dropout": key}, sample_clips, train=False)
        return _state_from_variables(variables, tx)

    key = jax.random.key(seed)
    abstract = jax.eval_shape(init, key)
    shardings = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
    if init_variables is None:
        state = jax.jit(init, out_shardings=shardings)(key)
    else:
        state = jax.jit(lambda v: _state_from_variables(v, tx), out_shardings=shardings)(
            init_variables
        )
    return state, shardings


def _state_from_variables(variables, tx):
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )


def variables_of(state: TrainState) -> dict:
    """The model variables of a state, as `module.apply` takes them."""
    return {"params": state.params, "batch_stats": state.batch_stats}
