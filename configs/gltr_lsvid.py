r"""GLTR on LS-VID: the paper recipe.

  python -m data_prep.build --dataset lsvid --manual_dir RAW --data_dir DATA --resize 256x128
  python -m vreid_jax.models.convert_resnet50 --torch_checkpoint resnet50.pth --out resnet50.npz
  python -m vreid_jax.main --config configs/gltr_lsvid.py --workdir runs/gltr_lsvid \
      --config.data.data_dir=DATA --config.model.pretrained=resnet50.npz

Published: mAP 44.32 / R1 63.07 (Li et al. 2019).
Our measured numbers are in the README's results table.
"""

from configs import recipe


def get_config(arg=None):
    return recipe.make("gltr", "lsvid", arg)
