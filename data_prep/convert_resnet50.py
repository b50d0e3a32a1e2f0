"""Moved: the weight converter is `python -m vreid_jax.models.convert_resnet50` now.

It needs the model code (to check a checkpoint maps onto our ResNet), and `data_prep` never imports
`vreid_jax`; this stub only tells a user of the old command where it went.
"""

import sys

MOVED = (
    "error: the converter moved: python -m vreid_jax.models.convert_resnet50 "
    "--torch_checkpoint ... --out ..."
)


def main(argv=None) -> None:
    del argv
    print(MOVED, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
