"""A CLIP ViT image encoder in plain torch, in OpenAI's module structure and state_dict names, for
`benchmarks/transfer.py` to pre-train and save as a TorchScript archive.

Like OpenAI's encoders it keeps a positional embedding for a square token grid and, like TF-CLIP
when it loads one, resizes that grid bilinearly to the grid of the input (for 64x32 frames and
8-pixel patches: 8x8 -> 8x4). The converter applies the same resize once to the stored grid, so the
converted network computes what this one computed while it learned.
"""

from __future__ import annotations

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
        mlp = [
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(4 * width, width)),
        ]
        self.mlp = nn.Sequential(OrderedDict(mlp))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [tokens, batch, width], CLIP's order
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        blocks = [ResidualAttentionBlock(width, heads) for _ in range(layers)]
        self.resblocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """NCHW images -> the projected class token `[B, output_dim]` (CLIP's image embedding)."""

    def __init__(self, side: int, patch_size: int, width: int, layers: int, heads: int, output_dim):
        super().__init__()
        self.side = side
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(side * side + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def positions(self, height: int, width: int) -> torch.Tensor:
        """The square grid resized to `height x width` tokens, as TF-CLIP's `resize_pos_embed`
        (bilinear, align_corners False, no antialias); the class row kept."""
        grid = self.positional_embedding[1:].reshape(1, self.side, self.side, -1)
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(height, width), mode="bilinear")
        grid = grid.permute(0, 2, 3, 1).reshape(height * width, -1)
        return torch.cat([self.positional_embedding[:1], grid])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        positions = self.positions(x.shape[2], x.shape[3])
        x = x.flatten(2).permute(0, 2, 1)  # [B, N, width], row-major over the grid
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + positions)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


class Archive(nn.Module):
    """The encoder as `.visual`, the place of the image tower in OpenAI's CLIP archives; scripted
    and saved with `torch.jit.save` it is what `vreid_jax.models.convert_clip` reads."""

    def __init__(self, visual: VisionTransformer):
        super().__init__()
        self.visual = visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)
