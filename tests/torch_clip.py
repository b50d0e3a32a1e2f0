"""A plain-torch CLIP ViT image encoder with OpenAI's module structure and state_dict names, and
TF-CLIP's forward (every token through `ln_post` and the projection, camera embedding on the class
token): the reference the Flax encoder and the converter are tested against.

Why not OpenAI's own `clip/model.py` (PyPI `clip-anytorch`): that package's `clip/__init__.py`
imports torchvision, and PyPI has no CPU torchvision build for the pinned CPU torch 2.13 (its
CUDA build, 0.28.0, fails at import with "operator torchvision::nms does not exist", and once
installed it also breaks `transformers`' model imports). So this reference is written from the
facts of `clip/model.py` (and TF-CLIP's `model/clip/model.py`), and
`tests/test_convert_clip.py` checks it against `transformers`' independent `CLIPVisionModel`.
Attention is torch's own `nn.MultiheadAttention`, as in OpenAI's code.

`ClipArchive` wraps the encoder as `.visual` beside a few text-tower parameters and the three
scalar buffers that OpenAI's TorchScript archives carry, so that `torch.jit.script(ClipArchive(...))`
saved with `torch.jit.save` has the key layout of `ViT-B-16.pt`.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, 4 * width)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(4 * width, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [L, N, D], as CLIP runs it
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """NCHW images -> (tokens after ln_post `[B, 1 + N, width]`, projected `[B, 1 + N, out]`)."""

    def __init__(self, grid, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid[0] * grid[1] + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor, cv_emb: torch.Tensor | None = None):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)  # [B, N, width], row-major over the grid
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        if cv_emb is not None:  # TF-CLIP: the camera embedding goes to the class token only
            cls = cls + cv_emb[:, None, :]
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_pre(x)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        tokens = self.ln_post(x)
        return tokens, tokens @ self.proj


class ClipArchive(nn.Module):
    """The key layout of OpenAI's `ViT-B-16.pt`: `visual.*`, text-tower keys, scalar buffers."""

    def __init__(self, visual: VisionTransformer, text_width: int = 32, embed_dim: int = 16):
        super().__init__()
        self.visual = visual
        self.token_embedding = nn.Embedding(10, text_width)
        self.positional_embedding = nn.Parameter(torch.randn(7, text_width))
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.randn(text_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))
        for name, value in (("input_resolution", 224), ("context_length", 7), ("vocab_size", 10)):
            self.register_buffer(name, torch.tensor(value))

    def forward(self, images: torch.Tensor):
        return self.visual(images)


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter drawn anew, LayerNorm affines and biases away from 1 and 0 too, so that no
    mapping error can hide behind a default value. Works on any CLIP naming (OpenAI's,
    `transformers`'): the only 1-D `.weight`s are LayerNorm scales."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1 and name.endswith(".weight"):
                param.copy_(1 + 0.2 * noise)
            elif param.ndim < 2:
                param.copy_(0.2 * noise)
            else:
                param.copy_(noise * math.prod(param.shape[1:]) ** -0.5)
    return module


def resize_pos_embed(positional: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """TF-CLIP's `resize_pos_embed` (`model/clip/model.py`, lines 451-467): class row kept, the
    square grid through `F.interpolate(mode='bilinear')` (align_corners False, no antialias)."""
    old = round((positional.shape[0] - 1) ** 0.5)
    grid = positional[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(height, width), mode="bilinear")
    return torch.cat([positional[:1], grid.permute(0, 2, 3, 1).reshape(height * width, -1)])
