"""The CLIP ViT image encoder that `benchmarks/transfer.py` pre-trains and saves as a TorchScript
archive: the tests' plain-torch encoder in OpenAI's structure and names (`tests/torch_clip.py`),
with a square positional grid resized to the input's grid and CLIP's image embedding out.

Like OpenAI's encoders it keeps a positional embedding for a square token grid and, like TF-CLIP
when it loads one, resizes that grid bilinearly to the grid of the input (for 64x32 frames and
8-pixel patches: 8x8 -> 8x4). The converter applies the same resize once to the stored grid, so the
converted network computes what this one computed while it learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests import torch_clip

# OpenAI's archive layout (`visual.*` beside text-tower keys), which `convert_clip` reads.
Archive = torch_clip.ClipArchive


class VisionTransformer(torch_clip.VisionTransformer):
    """NCHW images -> the projected class token `[B, output_dim]` (CLIP's image embedding)."""

    def __init__(self, side: int, patch_size: int, width: int, layers: int, heads: int, output_dim):
        super().__init__((side, side), patch_size, width, layers, heads, output_dim)
        self.side = side

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
