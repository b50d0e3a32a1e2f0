r"""TF-CLIP on MARS: the official recipe (Yu et al., AAAI 2024; `AsuradaYuci/TF-CLIP`,
`configs/vit_clipreid.yml`).

  python -m data_prep.build --dataset mars --manual_dir RAW --data_dir DATA
  python -m vreid_jax.models.convert_clip --weights ViT-B-16.pt --out ViT-B-16.npz \
      --height 256 --width 128
  python -m vreid_jax.main --config configs/tfclip_mars.py --workdir runs/tfclip_mars \
      --config.data.data_dir=DATA --config.model.pretrained=ViT-B-16.npz

Published: mAP 89.4 / R1 93.0 (Yu et al. 2024, Table 1), on TF-CLIP's MARS gallery (the stored
gallery without the queries: this recipe's `eval.gallery='torchreid'`), standard AP.
Our measured numbers are in the README's results table.
"""

from configs import recipe


def get_config(arg=None):
    return recipe.make("tfclip", "mars", arg)
