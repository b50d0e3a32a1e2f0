r"""NL3D on MARS: the paper recipe.

  python -m data_prep.build --dataset mars --manual_dir RAW --data_dir DATA
  python -m vreid_jax.models.convert_resnet50 --torch_checkpoint resnet50.pth --out resnet50.npz
  python -m vreid_jax.main --config configs/nl3d_mars.py --workdir runs/nl3d_mars \
      --config.data.data_dir=DATA --config.model.pretrained=resnet50.npz

Published: mAP 77.0 / R1 84.3 (Liao et al. 2018).
Our measured numbers are in the README's results table.
"""

from configs import recipe


def get_config(arg=None):
    return recipe.make("nl3d", "mars", arg)
