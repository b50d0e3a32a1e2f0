r"""NL3D on DukeMTMC-VideoReID: the paper recipe.

  python -m data_prep.build --dataset dukev --manual_dir RAW --data_dir DATA --resize 256x128
  python -m vreid_jax.models.convert_resnet50 --torch_checkpoint resnet50.pth --out resnet50.npz
  python -m vreid_jax.main --config configs/nl3d_dukev.py --workdir runs/nl3d_dukev \
      --config.data.data_dir=DATA --config.model.pretrained=resnet50.npz

DukeMTMC-VideoReID has been withdrawn by its authors, who no longer authorise its use: the recipe
is for those who still hold the data and may use it.
Published: not reported by the paper.
Our measured numbers are in the README's results table.
"""

from configs import recipe


def get_config(arg=None):
    return recipe.make("nl3d", "dukev", arg)
