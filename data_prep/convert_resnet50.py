r"""Converts a torchvision ResNet-50 checkpoint to the `.npz` the trainer loads (no torch needed there).

  python -m data_prep.convert_resnet50 --torch_checkpoint resnet50.pth --out resnet50.npz

Needs the optional `torch` extra. The `.npz` keeps torchvision's names and layouts; the mapping to
our parameter tree happens at load time (`vreid_jax.models.pretrained`), and is checked here once
so a wrong file fails now, not on a training machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a `.pth` state_dict (plain, or under 'state_dict', optionally DataParallel-prefixed)."""
    try:
        import torch  # noqa: PLC0415  (optional dependency, only for this conversion)
    except ImportError as e:
        raise SystemExit("error: converting needs torch: pip install 'vreid-jax[torch]'") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}.")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in state.items()}


def write_npz_atomic(arrays: dict[str, np.ndarray], out: str) -> None:
    """Writes `arrays` to `out` through a temporary file in the same folder, then renames."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def convert(torch_checkpoint: str, out: str) -> None:
    """Validates `torch_checkpoint` as a torchvision ResNet-50 and writes it as `.npz`."""
    from vreid_jax.models import pretrained  # noqa: PLC0415  (imports jax; after argument parsing)

    state = load_torch_state_dict(torch_checkpoint)
    try:
        pretrained.from_torchvision(state)
    except ValueError as e:
        raise ValueError(f"{torch_checkpoint}: not a torchvision ResNet-50 state_dict: {e}") from e
    write_npz_atomic(state, out)
    print(f"wrote {out}: {len(state)} arrays")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch_checkpoint", required=True, help="torchvision resnet50 .pth")
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)
    try:
        convert(args.torch_checkpoint, args.out)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
