r"""GLTR on MARS: the paper recipe.

  python -m data_prep.build --dataset mars --manual_dir RAW --data_dir DATA
  python -m vreid_jax.models.convert_resnet50 --torch_checkpoint resnet50.pth --out resnet50.npz
  python -m vreid_jax.main --config configs/gltr_mars.py --workdir runs/gltr_mars \
      --config.data.data_dir=DATA --config.model.pretrained=resnet50.npz

Published: mAP 78.47 / R1 87.02 (Li et al. 2019).
Our measured numbers are in the README's results table.
"""

from configs import recipe


def get_config(arg=None):
    return recipe.make("gltr", "mars", arg)
