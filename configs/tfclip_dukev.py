r"""TF-CLIP on DukeMTMC-VideoReID: the MARS recipe of TF-CLIP (Yu et al., AAAI 2024;
`AsuradaYuci/TF-CLIP`, `configs/vit_clipreid.yml`) with 8 cameras.

  python -m data_prep.build --dataset dukev --manual_dir RAW --data_dir DATA --resize 256x128
  python -m vreid_jax.models.convert_clip --weights ViT-B-16.pt --out ViT-B-16.npz \
      --height 256 --width 128
  python -m vreid_jax.main --config configs/tfclip_dukev.py --workdir runs/tfclip_dukev \
      --config.data.data_dir=DATA --config.model.pretrained=ViT-B-16.npz

DukeMTMC-VideoReID has been withdrawn by its authors, who no longer authorise its use; TF-CLIP
was not evaluated on it for that reason (its supplementary) and its code has no loader for it.
This recipe is for those who still hold the data and may use it; the official code has one
setting for every dataset it supports, so it uses that setting unchanged.
Published: none; the TF-CLIP paper reports no DukeMTMC-VideoReID result.
Our measured numbers are in the README's results table.
"""

from configs import recipe


def get_config(arg=None):
    return recipe.make("tfclip", "dukev", arg)
