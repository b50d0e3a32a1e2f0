r"""GLTR on iLIDS-VID: the paper recipe.

  python -m data_prep.build --dataset ilidsvid --manual_dir RAW --data_dir DATA --resize 256x128
  python -m vreid_jax.models.convert_resnet50 --torch_checkpoint resnet50.pth --out resnet50.npz
  python -m vreid_jax.main --config configs/gltr_ilidsvid.py:split=0 --workdir runs/gltr_ilidsvid \
      --config.data.data_dir=DATA --config.model.pretrained=resnet50.npz

`:split=N` picks one of the 10 published splits; `:all_splits` trains and evaluates all ten in turn
(workdir/split_N) and reports the mean CMC with the per-split table.
Published: R1 86.0 / R5 98.0 over 10 splits (Li et al. 2019).
Our measured numbers are in the README's results table.
"""

from configs import recipe


def get_config(arg=None):
    return recipe.make("gltr", "ilidsvid", arg)
