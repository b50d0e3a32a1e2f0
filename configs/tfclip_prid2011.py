r"""TF-CLIP on PRID-2011: the MARS recipe of TF-CLIP (Yu et al., AAAI 2024; `AsuradaYuci/TF-CLIP`,
`configs/vit_clipreid.yml`) with 2 cameras.

  python -m data_prep.build --dataset prid2011 --manual_dir RAW --data_dir DATA --resize 256x128
  python -m vreid_jax.models.convert_clip --weights ViT-B-16.pt --out ViT-B-16.npz \
      --height 256 --width 128
  python -m vreid_jax.main --config configs/tfclip_prid2011.py:split=0 \
      --workdir runs/tfclip_prid2011 \
      --config.data.data_dir=DATA --config.model.pretrained=ViT-B-16.npz

`:split=N` picks one of the 10 published splits; `:all_splits` trains and evaluates all ten in turn
(workdir/split_N) and reports the mean CMC with the per-split table.
TF-CLIP was not trained on PRID-2011 (its code has no PRID-2011 loader); the official code has one
setting for every dataset it supports, so this recipe uses it unchanged.
Published: none; the TF-CLIP paper reports no PRID-2011 result.
Our measured numbers are in the README's results table.
"""

from configs import recipe


def get_config(arg=None):
    return recipe.make("tfclip", "prid2011", arg)
