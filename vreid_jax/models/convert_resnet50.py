r"""Converts a torchvision ResNet checkpoint to the `.npz` the trainer loads (no torch needed there).

  python -m vreid_jax.models.convert_resnet50 --torch_checkpoint resnet50-19c8e357.pth --out resnet50.npz

Any torchvision ResNet state_dict converts: resnet18/34/50/101/152 as torchvision saves them
(`torch.save(model.state_dict(), path)`), or narrower/shallower ResNets with torchvision's module
names; a plain state_dict, one under a 'state_dict' key, and DataParallel's `module.` prefix are
read. Needs the optional `torch` extra. The `.npz` keeps torchvision's names and layouts; the mapping
to our parameter tree happens at load time (`vreid_jax.models.pretrained`), and is checked here once,
so a wrong file fails now and not on a training machine. Set `config.model.depth` (and
`stage_sizes`/`width` for a non-standard ResNet) to the architecture this command prints.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from vreid_jax import files


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a `.pth` state_dict (plain, or under 'state_dict', optionally DataParallel-prefixed).

    Raises:
      PretrainedWeightsError: naming the file when it is not a torch file holding a state_dict.
    """
    try:
        import torch  # noqa: PLC0415  (optional dependency, only for this conversion)
    except ImportError as e:
        raise SystemExit("error: converting needs torch: pip install 'vreid-jax[torch]'") from e
    from vreid_jax.models.pretrained import PretrainedWeightsError  # noqa: PLC0415

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001  (torch raises many types for a file it cannot read)
        raise PretrainedWeightsError(
            f"{path}: not a torch checkpoint holding a state_dict ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(
            f"{path}: expected a state_dict (names -> tensors), got {type(state).__name__}."
        )
    arrays = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise PretrainedWeightsError(
                f"{path}: entry {key!r} is of type {type(value).__name__}, not a tensor: expected a "
                f"state_dict (top-level keys: {sorted(map(str, state))[:6]})."
            )
        arrays[key.removeprefix("module.")] = value.detach().cpu().numpy()
    return arrays


def write_npz_atomic(arrays: dict[str, np.ndarray], out: str) -> None:
    """Writes `arrays` to `out` as `.npz` atomically (`vreid_jax.files.atomic_write`)."""
    with files.atomic_write(out, "wb") as f:
        np.savez(f, **arrays)


def convert(torch_checkpoint: str, out: str) -> str:
    """Validates `torch_checkpoint` as a torchvision ResNet, writes it as `.npz`; returns a summary."""
    from vreid_jax.models import pretrained  # noqa: PLC0415  (imports jax; after argument parsing)

    state = load_torch_state_dict(torch_checkpoint)
    architecture = pretrained.architecture_of(state, torch_checkpoint)
    pretrained.from_torchvision(state, source=torch_checkpoint)  # Every key maps, every shape fits.
    write_npz_atomic(state, out)
    return f"wrote {out}: {len(state)} arrays of a {architecture}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch_checkpoint", required=True, help="torchvision ResNet .pth")
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)
    try:
        print(convert(args.torch_checkpoint, args.out))
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
