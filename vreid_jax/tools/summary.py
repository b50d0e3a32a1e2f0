r"""Parameter counts and forward FLOPs of the configured model, from abstract shapes only.

  python -m vreid_jax.tools.summary --config configs/default.py [--config.model.name=gltr]

FLOPs come from XLA's cost analysis of the jitted eval-mode forward pass (lowered, not run), on one
`clip_len x height x width` clip; for frame-sequence models (GLTR) also per frame through the
encoder alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import flags
from ml_collections import config_flags

from vreid_jax import cli, config_lib, logging_utils
from vreid_jax.models import layers, registry


def _define_flags() -> None:
    # Defined only when run as a script: importing `summarize` claims no global flag names.
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/default.py.")
    flags.DEFINE_integer("num_classes", 625, "Classifier size (625 = MARS training identities).")
    flags.mark_flags_as_required(["config"])


def abstract_variables(module, clip_shape: tuple[int, ...]):
    """Variable shapes from `jax.eval_shape` of `module.init`: nothing is computed."""
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    clips = jax.ShapeDtypeStruct(clip_shape, jnp.float32)
    return jax.eval_shape(lambda c: module.init(keys, c, train=False), clips)


def forward_flops(module, variables, input_shape: tuple[int, ...], method=None) -> float:
    """XLA's FLOP estimate for one eval-mode forward pass on a float32 input of `input_shape`."""
    inputs = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    fn = lambda v, x: module.apply(v, x, train=False, method=method)
    cost = jax.jit(fn).lower(variables, inputs).cost_analysis()
    if isinstance(cost, list | tuple):  # Older jax returned one dict per computation.
        cost = cost[0]
    return float(cost["flops"])


def summarize(config, num_classes: int) -> dict:
    """Parameter counts per top-level module and forward FLOPs per clip (and per GLTR frame)."""
    module = registry.build_model(config.model, num_classes)
    height, width, clip_len = config.input.height, config.input.width, config.input.clip_len
    clip_shape = (1, clip_len, height, width, 3)
    variables = abstract_variables(module, clip_shape)
    result = {
        "model": config.model.name,
        "input": list(clip_shape),
        "params": {k: layers.count_params(v) for k, v in variables["params"].items()},
        "total_params": layers.count_params(variables["params"]),
        "flops_per_clip": forward_flops(module, variables, clip_shape),
    }
    if hasattr(module, "encode_frames"):  # Evaluated frame by frame (GLTR): its per-frame cost.
        result["flops_per_frame_encoder"] = forward_flops(
            module, variables, (1, height, width, 3), method="encode_frames"
        )
    return result


def main(argv):
    cli.no_arguments(argv)
    config_lib.validate(flags.FLAGS.config)
    cli.start(tensorflow=False)
    summary = summarize(flags.FLAGS.config, flags.FLAGS.num_classes)
    rows = [[name, f"{count:,}"] for name, count in summary["params"].items()]
    rows.append(["total", f"{summary['total_params']:,}"])
    logging_utils.log_table(f"{summary['model']} parameters", ["module", "params"], rows)
    print(
        f"input {summary['input']}: {summary['flops_per_clip'] / 1e9:.2f} GFLOPs per clip (forward)"
    )
    if "flops_per_frame_encoder" in summary:
        print(f"frame encoder: {summary['flops_per_frame_encoder'] / 1e9:.2f} GFLOPs per frame")


def cli_main():
    cli.launch(main, _define_flags)


if __name__ == "__main__":
    cli_main()
