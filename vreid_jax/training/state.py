"""The training state and its creation: abstract first, then materialised on the mesh."""

from __future__ import annotations

from collections.abc import Callable
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


def init_clips(input_config) -> jax.Array:
    """The input `model.init` traces with: one zero (already normalised) clip of the training shape
    `[1, T, H, W, 3]` from `config.input`."""
    shape = (1, input_config.clip_len, input_config.height, input_config.width, 3)
    return jnp.zeros(shape, jnp.float32)


def init_variables(model, init_input, seed: int) -> dict:
    """The model's random initialisation for `seed`: `{'params', 'batch_stats'}` (traceable)."""
    key = jax.random.key(seed)
    return model.init({"params": key, "dropout": key}, init_input, train=False)


def create_train_state(
    model,
    tx: optax.GradientTransformation,
    init_input,
    *,
    seed: int,
    mesh: jax.sharding.Mesh,
    overlay: Callable[[dict], dict] | None = None,
):
    """Initialises the state replicated on `mesh`; returns `(state, state_shardings)`.

    The state is first traced abstractly (`jax.eval_shape`, cheap), which gives the shardings; then a
    jitted init writes it straight onto the devices with those shardings.

    `overlay`, when given, maps the random initialisation (host numpy arrays) to the variables to
    start from, e.g. with ImageNet weights in the backbone (`pretrained.load_into`). Whatever it
    leaves alone keeps exactly the random value of `seed`, as without an overlay.
    """
    variables_fn = lambda: init_variables(model, init_input, seed)
    from_variables = lambda variables: _state_from_variables(variables, tx)
    init_state = lambda: from_variables(variables_fn())
    _, shardings = abstract_train_state(model, tx, init_input, mesh=mesh)
    if overlay is None:
        state = _jit_once(init_state, out_shardings=shardings)()
    else:
        variables = overlay(jax.device_get(_jit_once(variables_fn)()))
        state = _jit_once(from_variables, out_shardings=shardings)(variables)
    return state, shardings


def _jit_once(fn, **kwargs):
    """`jax.jit` for a function that runs once: compiled with less backend (LLVM) optimisation.

    A random initialiser is a threefry hash per parameter, which XLA:CPU is slow to optimise: the
    demo's initialisation compiled in 10.2 s at the default level and 5.0 s at level 1, with the
    same values bit for bit (level 0 changes them).
    """
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 1}, **kwargs)


def abstract_train_state(model, tx: optax.GradientTransformation, init_input, *, mesh):
    """`(abstract state, state shardings)`: the shapes, dtypes and (replicated) shardings of the
    state `create_train_state` makes, traced with `jax.eval_shape`; nothing is computed.

    What a step is lowered and compiled against without materialising the state (the preflight).
    """
    abstract = jax.eval_shape(
        lambda: _state_from_variables(init_variables(model, init_input, 0), tx)
    )
    shardings = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
    typed = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
    )
    return typed, shardings


def abstract_variables(model, init_input, mesh: jax.sharding.Mesh) -> dict:
    """Shapes, dtypes and (replicated) shardings of the model variables; nothing is computed.

    The restore target of a checkpoint's variables when no training state is needed (mode=eval).
    """
    abstract = jax.eval_shape(lambda: init_variables(model, init_input, 0))
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)),
        abstract,
    )


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
