r"""A tiny CPU configuration for smoke tests: synthetic MARS, a width-8 one-block-per-stage network,
64x32 frames, a handful of steps. Seconds per step on a laptop; learns nothing worth reporting.

  python -m vreid_jax.main --config configs/tiny.py:model=gltr --workdir runs/tiny \
      --config.data.data_dir=/tmp/vreid_tiny_data
"""

from configs import default
from vreid_jax import config_lib

# The size keys alone: `config.update_from_flattened_dict(RECIPE_SIZE_KEYS)` shrinks any recipe to
# a network and frames of this file's size (4 clips a batch), its data, model kind and schedule
# unchanged. The preflight's test and benchmark run the recipes so.
# A 2-layer width-64 CLIP ViT (4 heads, 16-pixel patches, a 64-d projection: SSP's one head).
TINY_CLIP = dict(width=64, layers=2, heads=4, output_dim=64)
RECIPE_SIZE_KEYS = {
    "model.stage_sizes": (1, 1, 1, 1),
    "model.width": 8,
    **{f"model.tfclip.{k}": v for k, v in TINY_CLIP.items()},
    "input.height": 64,
    "input.width": 32,
    "input.clip_len": 4,
    "input.num_ids_per_batch": 2,
    "input.num_instances": 2,
    "eval.batch_size": 4,
    "eval.frame_batch_size": 16,
    "eval.length_buckets": (16, 32),
}


def get_config(arg=None):
    args = config_lib.parse_arg(arg, model="nl3d")
    config = default.get_config()
    config.model.name = args.model

    config.data.name = "mars"
    config.data.synthetic.update(enabled=True, num_ids=8, tracklets_per_id=3, min_len=6, max_len=20)

    config.model.stage_sizes = (1, 1, 1, 1)
    config.model.width = 8
    config.model.bottleneck_dim = 32
    config.model.nonlocal_blocks = ((), (0,), (0,), ())
    config.model.gltr_frame_dim = 16

    config.input.height = 64
    config.input.width = 32
    config.input.clip_len = 4
    config.input.window = 16
    config.input.pad = 4
    config.input.num_ids_per_batch = 4
    config.input.num_instances = 2
    config.input.train_sampler = "consecutive" if args.model == "gltr" else "restricted_window"

    config.eval.batch_size = 8
    config.eval.frame_batch_size = 32
    config.eval.length_buckets = (16, 32)
    config.eval.num_ranked_queries = 2
    config.eval.ranked_top_k = 4

    if args.model == "tfclip":
        # A 2-layer width-64 CLIP ViT, random (no `pretrained`), TF-CLIP's own optimizer and
        # schedule (which it requires) with warm-up over the first epoch.
        config.model.tfclip.update(**TINY_CLIP)
        config.schedule.name = "multistep"
        config.schedule.warmup_epochs = 1.0
        config.schedule.milestones_epochs = (30, 50, 70)
        config.input.train_sampler = "restricted"

    config.num_train_steps = 6
    config.log_every_steps = 1
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 3
    return config
