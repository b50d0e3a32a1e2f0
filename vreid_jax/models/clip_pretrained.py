"""CLIP ViT weights: the converted `.npz` (names, architecture record) and its overlay on a model.

`python -m vreid_jax.models.convert_clip` writes every image-encoder array under the name it has
in OpenAI's `VisionTransformer` (`conv1.weight`, `transformer.resblocks.3.attn.in_proj_weight`,
`proj`, ...), in torch layout and float32, whatever layout the source file had; the positional
embedding is already resized to the token grid of the input size it was converted for. Beside
them, the entry `__clip_vit__` records the architecture as JSON (`ClipVitArchitecture`: width,
layers, heads, patch size, output dim, token grid), so that loading checks the configured encoder
against the file before any array is placed.

The names map by rule onto `clip_vit.ClipVisionTransformer`'s parameter tree:
`transformer.resblocks.{i}.X` -> `resblocks_{i}/X`, `mlp.c_fc` -> `c_fc`, `attn.in_proj_weight` ->
`attn/in_proj/kernel`, LayerNorm `weight/bias` -> `scale/bias`. Linear weights are transposed,
the patch conv goes from `(out, in, h, w)` to `(h, w, in, out)`, `proj` (already `(width,
output_dim)`, used as `x @ proj`) keeps its layout.

A model started from these weights is its own initialisation with the encoder's leaves replaced by
the file's (`load_into`), every one of them: the rest of the model keeps its init. A file with no
projection (a Hugging Face `CLIPVisionModel`) leaves `proj` at its init, and says so.
"""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from vreid_jax import files
from vreid_jax.models import clip_vit
from vreid_jax.models.pretrained import PretrainedWeightsError

# The `.npz` entry that holds the architecture record.
RECORD_KEY = "__clip_vit__"
CONVERT_COMMAND = "python -m vreid_jax.models.convert_clip"

_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_LN_LEAVES = {"weight": "scale", "bias": "bias"}
# Per block: torch name -> (flax path under resblocks_{i}, layout rule).
_BLOCK_LEAVES = {
    "ln_1.weight": (("ln_1", "scale"), "vector"),
    "ln_1.bias": (("ln_1", "bias"), "vector"),
    "attn.in_proj_weight": (("attn", "in_proj", "kernel"), "linear"),
    "attn.in_proj_bias": (("attn", "in_proj", "bias"), "vector"),
    "attn.out_proj.weight": (("attn", "out_proj", "kernel"), "linear"),
    "attn.out_proj.bias": (("attn", "out_proj", "bias"), "vector"),
    "ln_2.weight": (("ln_2", "scale"), "vector"),
    "ln_2.bias": (("ln_2", "bias"), "vector"),
    "mlp.c_fc.weight": (("c_fc", "kernel"), "linear"),
    "mlp.c_fc.bias": (("c_fc", "bias"), "vector"),
    "mlp.c_proj.weight": (("c_proj", "kernel"), "linear"),
    "mlp.c_proj.bias": (("c_proj", "bias"), "vector"),
}


@dataclasses.dataclass(frozen=True)
class ClipVitArchitecture:
    """What a CLIP ViT image encoder is, as far as its weights are concerned.

    `output_dim` is None for a file without the projection; `grid` is the token grid (rows,
    columns) that the positional embedding fits, i.e. inputs of `grid * patch_size` pixels.
    """

    width: int
    layers: int
    heads: int
    patch_size: int
    output_dim: int | None
    grid: tuple[int, int]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.grid[0] * self.patch_size, self.grid[1] * self.patch_size

    def __str__(self) -> str:
        projection = f"output {self.output_dim}" if self.output_dim else "no projection"
        text = (
            f"CLIP ViT of width {self.width}, {self.layers} layers, {self.heads} heads, patch "
            f"{self.patch_size}, {projection}, token grid {self.grid[0]}x{self.grid[1]} "
            f"({self.input_size[0]}x{self.input_size[1]} inputs)"
        )
        if (self.width, self.layers, self.heads, self.patch_size) == (768, 12, 12, 16):
            text += " (ViT-B/16)"
        return text

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ClipVitArchitecture:
        fields = json.loads(text)
        return cls(**{**fields, "grid": tuple(fields["grid"])})

    def encoder(self, dtype=jnp.float32) -> clip_vit.ClipVisionTransformer:
        """The Flax encoder of this architecture (a file without projection gets width -> width)."""
        return clip_vit.ClipVisionTransformer(
            width=self.width,
            layers=self.layers,
            heads=self.heads,
            patch_size=self.patch_size,
            output_dim=self.output_dim or self.width,
            dtype=dtype,
        )


def expected_shapes(architecture: ClipVitArchitecture) -> dict[str, tuple[int, ...]]:
    """OpenAI's name -> torch-layout shape of every image-encoder array of `architecture`."""
    w, p = architecture.width, architecture.patch_size
    gh, gw = architecture.grid
    shapes = {
        "conv1.weight": (w, 3, p, p),
        "class_embedding": (w,),
        "positional_embedding": (1 + gh * gw, w),
        "ln_pre.weight": (w,),
        "ln_pre.bias": (w,),
    }
    block = {
        "attn.in_proj_weight": (3 * w, w),
        "attn.in_proj_bias": (3 * w,),
        "attn.out_proj.weight": (w, w),
        "mlp.c_fc.weight": (4 * w, w),
        "mlp.c_fc.bias": (4 * w,),
        "mlp.c_proj.weight": (w, 4 * w),
    }
    for i in range(architecture.layers):
        for leaf in _BLOCK_LEAVES:
            shapes[f"transformer.resblocks.{i}.{leaf}"] = block.get(leaf, (w,))
    shapes["ln_post.weight"] = shapes["ln_post.bias"] = (w,)
    if architecture.output_dim:
        shapes["proj"] = (w, architecture.output_dim)
    return shapes


def flax_location(name: str) -> tuple[tuple[str, ...], str]:
    """The path under the encoder's params of OpenAI's image-encoder name, and its layout rule
    ('vector', 'linear' (transposed), 'conv' or 'matrix' (kept)).

    Raises:
      PretrainedWeightsError: for a name that is not part of a CLIP ViT image encoder.
    """
    if name == "conv1.weight":
        return ("conv1",), "conv"
    if name in ("class_embedding", "positional_embedding", "proj"):
        return (name,), "vector" if name == "class_embedding" else "matrix"
    layer_norm = re.fullmatch(r"(ln_pre|ln_post)\.(weight|bias)", name)
    if layer_norm:
        return (layer_norm[1], _LN_LEAVES[layer_norm[2]]), "vector"
    block = _BLOCK.fullmatch(name)
    if block and block[2] in _BLOCK_LEAVES:
        path, rule = _BLOCK_LEAVES[block[2]]
        return (f"resblocks_{block[1]}", *path), rule
    raise PretrainedWeightsError(f"{name!r} is not part of a CLIP ViT image encoder.")


def to_flax_layout(array, rule: str) -> np.ndarray:
    array = np.asarray(array, np.float32)
    if rule == "conv":  # (out, in, h, w) -> (h, w, in, out)
        return array.transpose(2, 3, 1, 0)
    if rule == "linear":  # (out, in) -> (in, out)
        return array.T
    return array


def _torch_layout(shape: tuple[int, ...], rule: str) -> tuple[int, ...]:
    if rule == "conv":
        return (shape[3], shape[2], shape[0], shape[1])
    if rule == "linear":
        return shape[::-1]
    return shape


# ------------------------------------------------------------------------------ the file


def write_npz(arrays: dict[str, np.ndarray], architecture: ClipVitArchitecture, out: str) -> None:
    """Writes OpenAI-named arrays and the architecture record to `out`, atomically."""
    with files.atomic_write(out, "wb") as f:
        np.savez(f, **arrays, **{RECORD_KEY: np.array(architecture.to_json())})


def read_npz(npz_path: str) -> tuple[dict[str, np.ndarray], ClipVitArchitecture]:
    """The arrays and the architecture of a `.npz` from `convert_clip`.

    Raises:
      PretrainedWeightsError: naming the file when it is unreadable or not from `convert_clip`.
    """
    try:
        with np.load(npz_path) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as e:
        raise PretrainedWeightsError(
            f"{npz_path} cannot be read as a .npz from `{CONVERT_COMMAND}`: {e}"
        ) from e
    if RECORD_KEY not in arrays:
        raise PretrainedWeightsError(
            f"{npz_path} is not a CLIP ViT converted by `{CONVERT_COMMAND}` (no entry "
            f"{RECORD_KEY!r}); convert the original file with `{CONVERT_COMMAND} --weights FILE "
            "--out OUT.npz`."
        )
    architecture = ClipVitArchitecture.from_json(str(arrays.pop(RECORD_KEY)))
    return arrays, architecture


# ------------------------------------------------------------------------------ the overlay


def convert(
    arrays: dict[str, np.ndarray], target, *, source: str, with_projection: bool = True
) -> dict[tuple[str, ...], np.ndarray]:
    """Maps OpenAI-named `arrays` onto an encoder's params tree `target` (arrays or
    ShapeDtypeStructs); every name used once, every leaf filled once (`proj` only
    `with_projection`).

    Returns:
      Flat dict `path -> float32 numpy array` in flax layout, paths relative to `target`.

    Raises:
      PretrainedWeightsError: naming `source`, the key and both shapes on a mismatch, an unknown
        name or a leaf the file does not fill.
    """
    expected = traverse_util.flatten_dict(target)
    assigned = {}
    for name, value in arrays.items():
        try:
            path, rule = flax_location(name)
        except PretrainedWeightsError as e:
            raise PretrainedWeightsError(f"{source}: key {e}") from None
        if path not in expected:
            raise PretrainedWeightsError(
                f"{source}: key {name!r} maps to {'/'.join(path)}, which this encoder lacks."
            )
        want = tuple(expected[path].shape)
        if _torch_layout(want, rule) != tuple(np.shape(value)):
            raise PretrainedWeightsError(
                f"{source}: key {name!r} has shape {tuple(np.shape(value))}, but the encoder's "
                f"{'/'.join(path)} needs {_torch_layout(want, rule)} (torch layout)."
            )
        assigned[path] = to_flax_layout(value, rule)
    missing = [p for p in expected if p not in assigned and (with_projection or p != ("proj",))]
    if missing:
        raise PretrainedWeightsError(
            f"{source}: no weights for {len(missing)} of the encoder's parameters, e.g. "
            f"{'/'.join(missing[0])} of shape {tuple(expected[missing[0]].shape)}."
        )
    return assigned


def _check_architecture(found: ClipVitArchitecture, configured: ClipVitArchitecture, source: str):
    for field in ("width", "layers", "heads", "patch_size", "output_dim", "grid"):
        have, want = getattr(found, field), getattr(configured, field)
        if field == "output_dim" and have is None:
            continue  # No projection in the file: the model's own init stays.
        if have != want:
            hint = ""
            if field == "grid":
                height, width = configured.input_size
                hint = (
                    f" Convert the original file for {height}x{width} inputs: `{CONVERT_COMMAND} "
                    f"--weights FILE --out OUT.npz --height {height} --width {width}`."
                )
            raise PretrainedWeightsError(
                f"{source}: the file holds a {found}; the model is a {configured}: {field} "
                f"{have} in the file, {want} in the model.{hint}"
            )


def load_into(
    variables: dict,
    npz_path: str,
    architecture: ClipVitArchitecture,
    path: tuple[str, ...] = ("params",),
) -> dict:
    """`variables` (host arrays of the model's own init) with the encoder at `path` replaced by the
    file's weights, every leaf of it; everything else is returned as it was.

    Args:
      variables: the whole model's variables.
      npz_path: a `.npz` from `convert_clip`.
      architecture: the encoder the model is configured with (checked against the file's record).
      path: where the encoder's params sit in `variables`, e.g. `("params", "image_encoder")`.

    Raises:
      PretrainedWeightsError: naming the file and what differs (architecture field, or key and
        both shapes).
    """
    arrays, found = read_npz(npz_path)
    _check_architecture(found, architecture, npz_path)
    subtree = variables
    for part in path:
        if part not in subtree:
            raise ValueError(f"The model has no {'/'.join(path)} to load {npz_path} into.")
        subtree = subtree[part]
    with_projection = found.output_dim is not None
    updates = convert(arrays, subtree, source=npz_path, with_projection=with_projection)
    if not with_projection:
        logging.warning(
            "%s has no projection: %s/proj keeps its initialisation.", npz_path, "/".join(path)
        )
    flat = traverse_util.flatten_dict(variables)
    for leaf, array in updates.items():
        key = (*path, *leaf)
        flat[key] = np.asarray(array, dtype=flat[key].dtype)
    return traverse_util.unflatten_dict(flat)


def from_npz(npz_path: str, dtype=jnp.float32):
    """The encoder a `convert_clip` file describes, with the file's weights and nothing else.

    Returns:
      `(module, variables)`; `module.apply(variables, images_nhwc)` gives `ClipTokens` for
      images of the file's input size. A file without projection gets the identity as `proj`
      (its `projected` tokens are its `tokens`).
    """
    arrays, architecture = read_npz(npz_path)
    module = architecture.encoder(dtype)
    height, width = architecture.input_size
    target = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    )
    with_projection = architecture.output_dim is not None
    flat = convert(arrays, target["params"], source=npz_path, with_projection=with_projection)
    if not with_projection:
        flat[("proj",)] = np.eye(architecture.width, dtype=np.float32)
    params = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})
    return module, {"params": params}
