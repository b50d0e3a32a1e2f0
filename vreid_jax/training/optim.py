"""Learning-rate schedules and optimizers from `config.optim` and `config.schedule`.

'adam' reproduces PyTorch `torch.optim.Adam(lr, betas, eps, weight_decay)`: the L2 term wd * w is
added to the gradient BEFORE the moment estimates (coupled decay), and the bias correction is the
same as torch's (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). 'adamw' decouples the decay:
the update is lr * (adam_direction + wd * w), as `torch.optim.AdamW` and `optax.adamw`. 'sgd' is
`torch.optim.SGD(lr, momentum, weight_decay)` with dampening 0: coupled decay, then the momentum
buffer, which starts at the first gradient. Weight decay applies to every parameter (BN scales and
biases included), as in torchreid's Adam recipe and the official GLTR code.

The names (`choices.OPTIMIZERS`, `choices.SCHEDULES`) and the schedule's durations are checked by
`config_lib.validate` before any work; this module takes them as checked.
"""

from __future__ import annotations

import optax


def epochs_to_steps(epochs: float, steps_in_epoch: int) -> int:
    """Converts a duration in epochs to optimiser steps. The one place where epochs become steps."""
    return int(round(epochs * steps_in_epoch))


def total_train_steps(config, steps_in_epoch: int) -> int:
    """`config.num_train_steps` when positive, else `config.num_epochs` converted to steps."""
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return epochs_to_steps(config.num_epochs, steps_in_epoch)


def create_learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer step (0 for the first update).

    A linear warmup from 0 to `config.optim.learning_rate` over `config.schedule.warmup_epochs`
    (none when 0), then:
      * 'exponential': lr * decay_rate ** (e / decay_epochs), e = epochs since the end of the warmup,
        fractional (`staircase=False`, decays every step) or whole (`staircase=True`, once per epoch);
      * 'multistep': lr * decay_rate ** (number of `milestones_epochs` reached), milestones counted
        from the start of training (as torch's MultiStepLR), so they must lie after the warmup;
      * 'constant': lr.
    Args:
      config: the full config (reads `optim.learning_rate` and `schedule.*`).
      steps_per_epoch: optimizer steps per epoch (> 0); epochs become steps via
        `epochs_to_steps`.
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}.")
    schedule, lr = config.schedule, config.optim.learning_rate
    warmup_steps = epochs_to_steps(schedule.warmup_epochs, steps_per_epoch)
    if schedule.name == "exponential":
        # One transition per epoch with the per-epoch factor: staircase then decays once an epoch.
        main = optax.exponential_decay(
            lr,
            transition_steps=steps_per_epoch,
            decay_rate=schedule.decay_rate ** (1.0 / schedule.decay_epochs),
            staircase=schedule.staircase,
        )
    elif schedule.name == "multistep":
        milestones = [epochs_to_steps(e, steps_per_epoch) for e in schedule.milestones_epochs]
        # `join_schedules` restarts the count after the warmup, hence the shift.
        main = optax.piecewise_constant_schedule(
            lr, {m - warmup_steps: schedule.decay_rate for m in milestones}
        )
    else:  # 'constant'
        main = optax.constant_schedule(lr)
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def adam_l2_direction(
    weight_decay: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """torch.optim.Adam's update direction before the learning rate: the L2 term wd * w joins the
    gradient, then the bias-corrected moments (coupled decay). Scale by -lr to get the update.
    The same two transforms as `create_optimizer`'s 'adam' (kept unnested there, so that its
    checkpoints' optimizer state keeps its tree)."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay), optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    )


def create_optimizer(
    config, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer named by `config.optim.name` and its learning-rate schedule.

    Returns:
      (tx, learning_rate_fn); the trainer reports `learning_rate_fn(step)` as the logged lr.
    """
    optim = config.optim
    learning_rate_fn = create_learning_rate_fn(config, steps_per_epoch)
    adam = optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps)
    decay = optax.add_decayed_weights(optim.weight_decay)
    if optim.name == "adam":
        chain = [decay, adam]  # Coupled L2: the decay enters the moments.
    elif optim.name == "adamw":
        chain = [adam, decay]  # Decoupled: the decay bypasses the moments.
    else:  # 'sgd'
        # torch.optim.SGD(momentum, weight_decay, dampening=0, nesterov=False): the L2 term joins
        # the gradient, then buf = momentum * buf + grad (buf = grad at the first step).
        chain = [decay, optax.trace(decay=optim.momentum, nesterov=False)]
    tx = optax.chain(*chain, optax.scale_by_learning_rate(learning_rate_fn))
    return tx, learning_rate_fn
