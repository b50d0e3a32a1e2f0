"""Optimizers against numpy transcriptions of torch.optim.Adam/AdamW/SGD; schedule boundary values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from vreid_jax.training import optim

_A = np.array([[2.0, -1.0, 0.5], [0.3, 1.5, -2.0], [1.0, 0.0, 1.0]], np.float32)
_B = np.array([1.0, -2.0, 0.5], np.float32)


def _grad(w):
    """Gradient of 0.5 * |A w - b|^2."""
    return _A.T @ (_A @ w - _B)


def _torch_adam_reference(w, lrs, wd, b1, b2, eps, decoupled):
    """torch.optim.Adam (coupled L2) / AdamW (decoupled), written out step by step in float64."""
    w = w.astype(np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, lr in enumerate(lrs, start=1):
        g = _grad(w)
        if decoupled:
            w = w * (1 - lr * wd)
        else:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
        w = w - (lr / (1 - b1**t)) * m / denom
    return w


def _config(**schedule):
    config = default.get_config()
    config.optim.learning_rate = 0.05
    config.optim.weight_decay = 0.1  # Large, so that coupled and decoupled clearly differ.
    config.schedule.update(schedule)
    return config


def _run(tx, w, steps):
    state = tx.init(jnp.asarray(w))
    w = jnp.asarray(w)

    @jax.jit
    def step(w, state):
        updates, state = tx.update(jnp.asarray(_grad(w)), state, w)
        return optax.apply_updates(w, updates), state

    for _ in range(steps):
        w, state = step(w, state)
    return np.asarray(w)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_optimizer_matches_torch_semantics(name):
    config = _config(name="exponential", warmup_epochs=1.0, decay_rate=0.5, decay_epochs=2.0)
    config.optim.name = name
    tx, lr_fn = optim.create_optimizer(config, steps_per_epoch=3)
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    steps = 12
    lrs = [float(lr_fn(s)) for s in range(steps)]
    expected = _torch_adam_reference(w0, lrs, 0.1, 0.9, 0.999, 1e-8, decoupled=name == "adamw")
    np.testing.assert_allclose(_run(tx, w0, steps), expected, rtol=2e-5, atol=1e-6)


def _torch_sgd_reference(w, lrs, wd, momentum):
    """torch.optim.SGD(momentum, weight_decay, dampening=0, nesterov=False), step by step in
    float64: the decay joins the gradient; the buffer starts as the first gradient."""
    w = w.astype(np.float64)
    buf = None
    for lr in lrs:
        g = _grad(w) + wd * w
        buf = g if buf is None else momentum * buf + g
        w = w - lr * buf
    return w


def test_sgd_matches_torch_semantics():
    """The official GLTR optimizer, through a multistep schedule (x0.1 at steps 4 and 8)."""
    config = _config(name="multistep", warmup_epochs=0.0, decay_rate=0.1, milestones_epochs=(2, 4))
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    tx, lr_fn = optim.create_optimizer(config, steps_per_epoch=2)
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    lrs = [float(lr_fn(s)) for s in range(12)]
    assert lrs[3] == pytest.approx(0.05) and lrs[4] == pytest.approx(0.005)
    expected = _torch_sgd_reference(w0, lrs, 0.1, 0.9)
    np.testing.assert_allclose(_run(tx, w0, 12), expected, rtol=2e-5, atol=1e-6)


def test_adam_and_adamw_differ():
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    config = _config(name="constant")
    adam, _ = optim.create_optimizer(config, 10)
    config.optim.name = "adamw"
    adamw, _ = optim.create_optimizer(config, 10)
    assert np.abs(_run(adam, w0, 5) - _run(adamw, w0, 5)).max() > 1e-3


def test_exponential_schedule_boundaries():
    config = _config(name="exponential", warmup_epochs=2.0, decay_rate=0.1, decay_epochs=4.0)
    lr = optim.create_learning_rate_fn(config, steps_per_epoch=10)
    np.testing.assert_allclose(lr(0), 0.0)
    np.testing.assert_allclose(lr(10), 0.025, rtol=1e-6)  # Half-way through the warmup.
    np.testing.assert_allclose(lr(20), 0.05, rtol=1e-6)  # Warmup done: the peak.
    np.testing.assert_allclose(lr(25), 0.05 * 0.1 ** (0.5 / 4), rtol=1e-5)  # Per-step decay.
    np.testing.assert_allclose(lr(60), 0.005, rtol=1e-5)  # decay_epochs after the warmup.
    config.schedule.staircase = True
    lr = optim.create_learning_rate_fn(config, steps_per_epoch=10)
    np.testing.assert_allclose(lr(29), 0.05, rtol=1e-6)  # Still the first decay epoch.
    np.testing.assert_allclose(lr(30), 0.05 * 0.1 ** (1 / 4), rtol=1e-5)
    np.testing.assert_allclose(lr(60), 0.005, rtol=1e-5)


def test_multistep_and_constant_schedules():
    config = _config(name="multistep", warmup_epochs=1.0, decay_rate=0.1, milestones_epochs=(3, 5))
    lr = optim.create_learning_rate_fn(config, steps_per_epoch=4)
    values = [float(lr(s)) for s in (0, 2, 4, 11, 12, 19, 20, 100)]
    np.testing.assert_allclose(values, [0, 0.025, 0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005], 1e-5)
    config = _config(name="constant", warmup_epochs=0.0)
    lr = optim.create_learning_rate_fn(config, steps_per_epoch=4)
    np.testing.assert_allclose([lr(0), lr(1000)], [0.05, 0.05])


def test_epochs_become_steps_rounded():
    assert optim.epochs_to_steps(1.5, 20) == 30
    assert optim.epochs_to_steps(0.26, 10) == 3
