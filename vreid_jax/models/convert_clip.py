r"""Converts a CLIP ViT image encoder's weights to the `.npz` the Flax encoder loads.

  python -m vreid_jax.models.convert_clip --weights ViT-B-16.pt --out ViT-B-16.npz \
      [--height 256 --width 128] [--heads N]

The layout is recognised from the file itself, whatever its name:
- OpenAI's TorchScript archive (`ViT-B-16.pt`, what TF-CLIP and CLIP-ReID load): read with
  `torch.jit.load(map_location='cpu').state_dict()`, keys `visual.*`;
- open_clip's `open_clip_model.safetensors` or `open_clip_pytorch_model.bin` (a `torch.save`d
  state_dict): the same `visual.*` keys;
- Hugging Face `CLIPModel`, `CLIPVisionModelWithProjection` or `CLIPVisionModel`
  `model.safetensors` (or `pytorch_model.bin`): `vision_model.*` keys (transformers 5 writes a
  `CLIPVisionModel` without that prefix), separate q/k/v projections with biases, which become
  OpenAI's fused `in_proj`. A `CLIPVisionModel` has no projection: the model's own init then
  stays for it.
A TF-CLIP training checkpoint (`image_encoder.*`, `cv_embed`, `TMD.*`, ...) is a trained model, not
an encoder to start from: `python -m vreid_jax.deploy.convert_tfclip` makes it a workdir.
The text tower (and OpenAI's scalar buffers) are ignored. Width, layers, patch size and output
dim are read off the shapes; the number of heads off the TorchScript archive's attention modules,
or the `config.json` beside a Hugging Face file, else OpenAI's rule width // 64 (`--heads` sets
it). The positional embedding is resized to the token grid of `--height x --width` inputs
(TF-CLIP's 256x128 by default) as TF-CLIP does when it loads the file
(`clip_vit.resize_positional_embedding`). Every array is checked against the encoder before
anything is written; the `.npz` (`vreid_jax.models.clip_pretrained`) records the architecture.
Needs the optional `torch` extra (torch, safetensors).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import zipfile

import numpy as np

# What is not the image encoder: ignored, and counted in the summary.
_OPENAI_PREFIX = "visual."
_HF_PREFIX = "vision_model."
_HF_TEXT = ("text_model.", "text_projection.", "logit_scale")
_HF_BUFFERS = ("embeddings.position_ids",)
# OpenAI's rule for the number of heads (`clip/model.py`, `build_model`: vision_width // 64).
HEAD_DIM = 64


def _error(message: str):
    from vreid_jax.models.pretrained import PretrainedWeightsError  # noqa: PLC0415  (jax)

    return PretrainedWeightsError(message)


# ------------------------------------------------------------------------------ reading files


def _is_safetensors(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (size,) = struct.unpack("<Q", head[:8])
    return 0 < size < os.path.getsize(path) and head[8:9] == b"{"


def _is_torchscript(path: str) -> bool:
    """A TorchScript archive is a zip with `constants.pkl` (torch.save's zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _to_numpy(value) -> np.ndarray:
    if value.is_floating_point():
        value = value.float()  # OpenAI's archives are float16; bfloat16 has no numpy dtype.
    return value.detach().cpu().numpy()


def _archive_heads(archive) -> int | None:
    """The heads of the image encoder's attention modules, where the archive kept the attribute
    (a scripted module does; a traced one may not)."""
    found = {
        getattr(module, "num_heads", None)
        for name, module in archive.named_modules()
        if name.startswith(_OPENAI_PREFIX)
        and getattr(module, "original_name", "") == "MultiheadAttention"
    }
    found.discard(None)
    return int(found.pop()) if len(found) == 1 else None


def read_weights(path: str) -> tuple[dict[str, np.ndarray], str, int | None]:
    """The arrays of `path` (float32), the container's name, and the number of heads when the file
    says it (a TorchScript archive's attention modules).

    Raises:
      PretrainedWeightsError: naming the file when it is none of the containers above.
    """
    try:
        import torch  # noqa: PLC0415  (optional dependency, only for this conversion)
    except ImportError as e:
        raise SystemExit("error: converting needs torch: pip install 'vreid-jax[torch]'") from e
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file.")
    heads = None
    try:
        if _is_safetensors(path):
            try:
                from safetensors.torch import load_file  # noqa: PLC0415
            except ImportError as e:
                raise SystemExit(
                    "error: reading safetensors needs safetensors: pip install 'vreid-jax[torch]'"
                ) from e
            state, container = load_file(path), "safetensors file"
        elif _is_torchscript(path):
            archive = torch.jit.load(path, map_location="cpu")
            state, container = archive.state_dict(), "TorchScript archive"
            heads = _archive_heads(archive)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            container = "torch state_dict"
    except (OSError, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001  (torch and safetensors raise many types)
        raise _error(
            f"{path}: not a TorchScript archive, a torch state_dict or a safetensors file that "
            f"can be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # an open_clip training checkpoint
    if not isinstance(state, dict):
        raise _error(
            f"{path}: expected a state_dict (names -> tensors), got {type(state).__name__}."
        )
    arrays = {
        str(key).removeprefix("module."): _to_numpy(value)
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
    }
    return arrays, container, heads


def _hf_config(path: str) -> dict:
    """The vision part of the `config.json` beside a Hugging Face file ({} when there is none)."""
    config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not os.path.isfile(config_path):
        return {}
    with open(config_path) as f:
        config = json.load(f)
    return config.get("vision_config", config)


# ------------------------------------------------------------------------------ layouts


def _hf_sources(name: str) -> tuple[str, ...]:
    """The Hugging Face keys (without the `vision_model.` prefix) of OpenAI's name `name`."""
    simple = {
        "conv1.weight": "embeddings.patch_embedding.weight",
        "class_embedding": "embeddings.class_embedding",
        "positional_embedding": "embeddings.position_embedding.weight",
        "proj": "visual_projection.weight",
    }
    if name in simple:
        return (simple[name],)
    for openai, hf in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        if name.startswith(openai + "."):
            return (hf + name[len(openai) :],)
    _, _, layer, leaf = name.split(".", 3)
    prefix = f"encoder.layers.{layer}."
    if leaf.startswith("attn.in_proj_"):
        kind = leaf.removeprefix("attn.in_proj_")
        return tuple(f"{prefix}self_attn.{x}_proj.{kind}" for x in "qkv")
    renames = {"attn.": "self_attn.", "ln_1.": "layer_norm1.", "ln_2.": "layer_norm2."}
    renames |= {"mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
    for openai, hf in renames.items():
        if leaf.startswith(openai):
            return (prefix + hf + leaf[len(openai) :],)
    raise AssertionError(name)


class Layout:
    """How one layout names the encoder's arrays: source keys per OpenAI name, and what to
    ignore."""

    def __init__(self, arrays: dict[str, np.ndarray], openai_prefix: str | None = None):
        """The layout of `arrays`; `openai_prefix` names OpenAI's layout under another prefix
        (a TF-CLIP checkpoint's `image_encoder.`)."""
        if openai_prefix is not None:
            self.hugging_face, self.prefix = False, openai_prefix
            return
        self.hugging_face = not any(k.startswith(_OPENAI_PREFIX) for k in arrays)
        self.prefix = _HF_PREFIX if any(k.startswith(_HF_PREFIX) for k in arrays) else ""
        if not self.hugging_face:
            self.prefix = _OPENAI_PREFIX

    def sources(self, name: str) -> tuple[str, ...]:
        if not self.hugging_face:
            return (self.prefix + name,)
        keys = _hf_sources(name)
        return keys if name == "proj" else tuple(self.prefix + k for k in keys)

    def is_encoder_key(self, key: str) -> bool:
        """Whether `key` belongs to the image encoder (and so must be used)."""
        if not self.hugging_face:
            return key.startswith(self.prefix)
        if key == "visual_projection.weight":
            return True
        if key.startswith(_HF_TEXT) or key.removeprefix(self.prefix) in _HF_BUFFERS:
            return False
        return key.startswith(self.prefix)

    def name(self, container: str) -> str:
        if self.hugging_face:
            return f"Hugging Face CLIP {container}"
        return f"OpenAI/open_clip {container}"


def _recognise(arrays: dict[str, np.ndarray], path: str) -> Layout:
    if f"{_OPENAI_PREFIX}conv1.weight" in arrays:
        if any(k.startswith(f"{_OPENAI_PREFIX}attnpool.") for k in arrays):
            raise _error(f"{path}: a ResNet CLIP ('visual.attnpool.*'), not a ViT.")
        return Layout(arrays)
    if "image_encoder.conv1.weight" in arrays:
        raise _error(
            f"{path}: a TF-CLIP training checkpoint, which becomes a workdir to evaluate and use "
            "as it is: `python -m vreid_jax.deploy.convert_tfclip --weights FILE --workdir DIR`."
        )
    hf_key = "embeddings.patch_embedding.weight"
    if hf_key in arrays or _HF_PREFIX + hf_key in arrays:
        return Layout(arrays)
    sample = ", ".join(repr(k) for k in list(arrays)[:5]) or "none"
    raise _error(
        f"{path}: not a CLIP ViT image encoder: expected OpenAI/open_clip keys "
        f"'visual.conv1.weight', ... or Hugging Face keys 'vision_model.embeddings."
        f"patch_embedding.weight', ... (first keys: {sample})."
    )


def _shape(arrays, key, path) -> tuple[int, ...]:
    if key not in arrays:
        raise _error(f"{path}: no key {key!r}.")
    return tuple(arrays[key].shape)


def encoder_dimensions(arrays, layout, path, heads) -> tuple[dict, int]:
    """Width, layers, heads, patch size and output dim (None without projection) of the file's
    encoder, read off its shapes (`heads` None: OpenAI's rule), and the rows of its positional
    embedding, whose grid the caller interprets."""
    conv_key = layout.sources("conv1.weight")[0]
    conv = _shape(arrays, conv_key, path)
    if len(conv) != 4 or conv[1] != 3 or conv[2] != conv[3]:
        raise _error(
            f"{path}: key {conv_key!r} has shape {conv}; expected (width, 3, patch, patch)."
        )
    model_width, patch = conv[0], conv[2]
    rows = _shape(arrays, layout.sources("positional_embedding")[0], path)[0]
    layer_key = layout.sources("transformer.resblocks.0.ln_1.weight")[0]
    marker = layer_key.split("0.", 1)[0]  # '...resblocks.' or '...encoder.layers.'
    layer_ids = {k[len(marker) :].split(".")[0] for k in arrays if k.startswith(marker)}
    layer_ids = {int(i) if i.isdigit() else -1 for i in layer_ids}
    if layer_ids != set(range(len(layer_ids))) or not layer_ids:
        raise _error(f"{path}: expected layers 0..N-1 under {marker!r}, found {sorted(layer_ids)}.")
    proj_key = layout.sources("proj")[0]
    output_dim = None
    if proj_key in arrays:
        proj = _shape(arrays, proj_key, path)
        output_dim = proj[0] if layout.hugging_face else proj[-1]
    if heads is None:
        if model_width % HEAD_DIM:
            raise _error(
                f"{path}: width {model_width} is not a multiple of {HEAD_DIM}, so OpenAI's rule "
                "(heads = width // 64) does not apply and the file does not say: pass --heads."
            )
        heads = model_width // HEAD_DIM
    if model_width % heads:
        raise _error(f"{path}: width {model_width} is not a multiple of {heads} heads.")
    dimensions = dict(
        width=model_width,
        layers=len(layer_ids),
        heads=heads,
        patch_size=patch,
        output_dim=output_dim,
    )
    return dimensions, rows


def _architecture(arrays, layout, path, heads, height, width):
    """The architecture of the file's encoder, from its shapes, at the grid of the input size;
    and the (square) grid of its pretrained positional embedding."""
    from vreid_jax.models import clip_pretrained, clip_vit  # noqa: PLC0415  (jax)

    dimensions, rows = encoder_dimensions(arrays, layout, path, heads)
    side = round((rows - 1) ** 0.5)
    if side * side != rows - 1 or rows < 2:
        pos_key = layout.sources("positional_embedding")[0]
        raise _error(f"{path}: key {pos_key!r} has {rows} rows: not a class row and a square grid.")
    grid = clip_vit.patch_grid(height, width, dimensions["patch_size"])
    return clip_pretrained.ClipVitArchitecture(**dimensions, grid=grid), (side, side)


def resolve_heads(args_heads, archive_heads, hf_config, path) -> tuple[int | None, str]:
    """The number of heads and who says it: the file, `--heads`, or nobody (None: OpenAI's
    rule)."""
    told = {
        "the TorchScript archive": archive_heads,
        "config.json": hf_config.get("num_attention_heads"),
    }
    told = {where: n for where, n in told.items() if n is not None}
    if args_heads is not None:
        if args_heads < 1:
            raise _error(f"{path}: --heads {args_heads} must be positive.")
        for where, n in told.items():
            if n != args_heads:
                raise _error(f"{path}: --heads {args_heads}, but {where} says {n}.")
        return args_heads, "--heads"
    for where, n in told.items():
        return n, where
    return None, f"width // {HEAD_DIM}, OpenAI's rule"


def _check_hf_config(hf_config, path):
    for key, want in (("hidden_act", "quick_gelu"), ("layer_norm_eps", 1e-5)):
        if key in hf_config and hf_config[key] != want:
            raise _error(
                f"{path}: config.json has {key}={hf_config[key]!r}; OpenAI's CLIP ViT (and this "
                f"encoder) uses {want!r}."
            )


def gather(arrays, layout, architecture, path) -> tuple[dict[str, np.ndarray], set[str]]:
    """OpenAI-named arrays of the encoder, every shape checked against `architecture` (at its
    pretrained grid) and every encoder key of the file used once; and the keys used."""
    from vreid_jax.models import clip_pretrained  # noqa: PLC0415  (jax)

    out, used = {}, set()
    for name, shape in clip_pretrained.expected_shapes(architecture).items():
        keys = layout.sources(name)
        parts = []
        for key in keys:
            want = shape
            if len(keys) == 3:  # q, k, v: one third of the fused in_proj each
                want = (shape[0] // 3, *shape[1:])
            if name == "proj" and layout.hugging_face:
                want = shape[::-1]  # visual_projection.weight is (output_dim, width)
            have = _shape(arrays, key, path)
            if have != want:
                raise _error(
                    f"{path}: key {key!r} has shape {have}, but a {architecture} needs {want}."
                )
            parts.append(arrays[key])
            used.add(key)
        array = np.concatenate(parts) if len(parts) > 1 else parts[0]
        out[name] = array.T if name == "proj" and layout.hugging_face else array
    unused = sorted(k for k in arrays if layout.is_encoder_key(k) and k not in used)
    if unused:
        raise _error(
            f"{path}: key {unused[0]!r} is not part of a {architecture} ({len(unused)} such keys)."
        )
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in out.items()}, used


def convert(weights: str, out: str, *, height: int, width: int, heads: int | None = None) -> str:
    """Validates `weights` as a CLIP ViT image encoder and writes the `.npz`; returns a summary."""
    import dataclasses  # noqa: PLC0415

    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from vreid_jax.models import clip_pretrained, clip_vit  # noqa: PLC0415  (jax)

    arrays, container, archive_heads = read_weights(weights)
    layout = _recognise(arrays, weights)
    hf_config = _hf_config(weights) if layout.hugging_face else {}
    _check_hf_config(hf_config, weights)
    heads, heads_told_by = resolve_heads(heads, archive_heads, hf_config, weights)
    architecture, pretrained_grid = _architecture(arrays, layout, weights, heads, height, width)
    at_pretrained_grid = dataclasses.replace(architecture, grid=pretrained_grid)
    encoder, used = gather(arrays, layout, at_pretrained_grid, weights)
    encoder["positional_embedding"] = clip_vit.resize_positional_embedding(
        encoder["positional_embedding"], pretrained_grid, architecture.grid
    )
    # The arrays against the Flax encoder itself: every leaf filled, every shape right.
    module = architecture.encoder()
    target = jax.eval_shape(
        module.init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, *architecture.input_size, 3), jnp.float32),
    )
    clip_pretrained.convert(
        encoder,
        target["params"],
        source=weights,
        with_projection=architecture.output_dim is not None,
    )
    clip_pretrained.write_npz(encoder, architecture, out)

    lines = [f"read {weights}: {layout.name(container)}; {architecture}."]
    if pretrained_grid != architecture.grid:
        lines.append(
            f"positional embedding resized from {pretrained_grid[0]}x{pretrained_grid[1]} to "
            f"{architecture.grid[0]}x{architecture.grid[1]} tokens (bilinear, as TF-CLIP)."
        )
    lines.append(f"heads: {architecture.heads} ({heads_told_by}).")
    if architecture.output_dim is None:
        lines.append("no projection in this file: a model's own init stays for it.")
    lines.append(
        f"ignored {len(arrays) - len(used)} arrays outside the image encoder (text tower, buffers)."
    )
    lines.append(f"wrote {out}: {len(encoder)} arrays.")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="ViT-B-16.pt, model.safetensors, ...")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--height", type=int, default=256, help="input height in pixels")
    parser.add_argument("--width", type=int, default=128, help="input width in pixels")
    parser.add_argument(
        "--heads", type=int, default=None, help="attention heads (if the file cannot say)"
    )
    args = parser.parse_args(argv)
    try:
        print(
            convert(args.weights, args.out, height=args.height, width=args.width, heads=args.heads)
        )
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
