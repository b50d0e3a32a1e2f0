"""TF-CLIP's optimizer and learning-rate schedule (stage 2 of the official code, the only one its
training runs: `train.py`:91-93).

Parameter groups (`solver/make_optimizer_prompt.py`:22-51, `make_optimizer_2stage`), per leaf:
* parameters without `requires_grad` are left out (26-27): the four BNNeck biases
  (`models.tfclip.is_frozen`) get a zero update here;
* a name containing 'bias' gets lr x `BIAS_LR_FACTOR` (2, `configs/vit_clipreid.yml`:60) and
  `WEIGHT_DECAY_BIAS` (1e-4, line 53) (30-32); torch's names with 'bias' are exactly the Flax
  leaves named 'bias' (Linear, LayerNorm, BatchNorm and `in_proj_bias` alike);
* with `LARGE_FC_LR` (True, line 54), a name containing 'classifier_proj_temp' gets lr x 10
  (33-36), after the bias factor; the 'arcface' name matches nothing in TF-CLIP;
* `LARGE_Prompt_LR` (True, line 55) multiplies names containing 'SAT' or 'prompts_generator' by 10
  (37-40): no TF-CLIP parameter has either name (SSP is `SSP.*`), so it changes nothing and is not
  reproduced;
* every other parameter: `BASE_LR` 5e-6 (line 48), `WEIGHT_DECAY` 1e-4 (line 52).
`OPTIMIZER_NAME` 'Adam' (line 47) is `torch.optim.Adam(groups)`: betas (0.9, 0.999), eps 1e-8,
coupled L2 (`optim.adam_l2_direction`).

Schedule (`solver/lr_scheduler.py`:14-56, `WarmupMultiStepLR`, built at `train.py`:92-93 and
stepped once per epoch, `processor/processor_clipreid_stage2.py`:174): in 0-based epoch e,
lr = base * w(e) * gamma ** (number of milestones <= e), w(e) = f (1 - e / n) + e / n for e < n
('linear') or f ('constant'), 1 after; `STEPS` (30, 50, 70), `GAMMA` 0.1, `WARMUP_FACTOR` f = 0.1,
`WARMUP_ITERS` n = 10 epochs (yml lines 50-51, 62-63). Constant within an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from vreid_jax.models.tfclip import is_frozen
from vreid_jax.training import optim

FROZEN = "frozen"


def warmup_multistep_schedule(
    base_lr: float,
    steps_per_epoch: int,
    milestones_epochs: Sequence[int] = (30, 50, 70),
    gamma: float = 0.1,
    warmup_factor: float = 0.1,
    warmup_epochs: int = 10,
    warmup_method: str = "linear",
) -> optax.Schedule:
    """The official WarmupMultiStepLR as a function of the optimizer step (0 for the first)."""
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}.")
    if list(milestones_epochs) != sorted(milestones_epochs):
        raise ValueError(f"Milestones must increase, got {list(milestones_epochs)}.")
    if warmup_method not in ("linear", "constant"):
        raise ValueError(f"warmup_method must be 'linear' or 'constant', got {warmup_method!r}.")
    milestones = jnp.asarray(milestones_epochs, jnp.int32)

    def schedule(step):
        epoch = jnp.asarray(step, jnp.int32) // steps_per_epoch
        if warmup_method == "linear":
            alpha = epoch.astype(jnp.float32) / max(warmup_epochs, 1)
            warm = warmup_factor * (1 - alpha) + alpha
        else:
            warm = jnp.float32(warmup_factor)
        factor = jnp.where(epoch < warmup_epochs, warm, 1.0)
        decays = jnp.sum(milestones <= epoch)
        return base_lr * factor * gamma ** decays.astype(jnp.float32)

    return schedule


def _group(path: tuple[str, ...], bias_lr_factor, weight_decay, weight_decay_bias, large_fc_lr):
    """(lr multiplier, weight decay) of a leaf, or None for a frozen one."""
    if is_frozen(path):
        return None
    name = "/".join(path)
    lr, wd = 1.0, weight_decay
    if "bias" in name:
        lr, wd = bias_lr_factor, weight_decay_bias
    if large_fc_lr and "classifier_proj_temp" in name:
        lr = lr * 10
    return lr, wd


def param_groups(
    params,
    bias_lr_factor: float = 2.0,
    weight_decay: float = 1e-4,
    weight_decay_bias: float = 1e-4,
    large_fc_lr: bool = True,
):
    """The group label of every leaf of `params`: 'lr<multiplier>_wd<decay>' or 'frozen'."""
    flat = traverse_util.flatten_dict(params)
    labels = {}
    for path in flat:
        group = _group(path, bias_lr_factor, weight_decay, weight_decay_bias, large_fc_lr)
        labels[path] = FROZEN if group is None else f"lr{group[0]!r}_wd{group[1]!r}"
    return traverse_util.unflatten_dict(labels)


def create_tfclip_optimizer(
    params,
    schedule: optax.Schedule,
    bias_lr_factor: float = 2.0,
    weight_decay: float = 1e-4,
    weight_decay_bias: float = 1e-4,
    large_fc_lr: bool = True,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """`torch.optim.Adam` over TF-CLIP's parameter groups, lr = multiplier * `schedule(step)`."""
    labels = param_groups(params, bias_lr_factor, weight_decay, weight_decay_bias, large_fc_lr)
    transforms = {FROZEN: optax.set_to_zero()}
    for label in set(jax.tree.leaves(labels)) - {FROZEN}:
        multiplier, wd = (float(part[2:]) for part in label.split("_"))
        transforms[label] = optax.chain(
            optim.adam_l2_direction(wd, b1, b2, eps),
            optax.scale_by_learning_rate(lambda step, m=multiplier: m * schedule(step)),
        )
    return optax.multi_transform(transforms, labels)
