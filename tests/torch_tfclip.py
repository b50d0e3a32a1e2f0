"""TF-CLIP's modules, heads and losses in plain torch, written from the official code's facts
(`AsuradaYuci/TF-CLIP`: `model/make_model_clipreid.py`, `loss/`, `solver/`; see
`vreid_jax/models/tfclip.py` for the file:line of each), with the official tensor layout: frames
`[B * T, 3, H, W]` clip-major, TMD on `[L, B * T, D]` through the same view/permute steps.

Left out, because the official forward never uses them (so they never train): the
`classifier_proj_temp2` classifier and SSP's `alpha` and `norm`. `to_flax_variables` maps every
other tensor one-to-one onto `vreid_jax.models.tfclip.TFClip`'s variables (BatchNorm's
`num_batches_tracked` has no role with a fixed momentum and is the one tensor not mapped).
"""

from __future__ import annotations

import re
from bisect import bisect_right

import numpy as np
import torch
import torch_mapping
from torch import nn
from torch_clip import QuickGELU, ResidualAttentionBlock, VisionTransformer

from vreid_jax.models import clip_pretrained


class CrossFrameBlock(ResidualAttentionBlock):
    """CLIP's residual block over each frame's tokens and its message token, after the message
    tokens attend across the T frames."""

    def __init__(self, d: int, heads: int, T: int):
        super().__init__(d, heads)
        self.T = T
        self.message_fc = nn.Linear(d, d)
        self.message_ln = nn.LayerNorm(d)
        self.message_attn = nn.MultiheadAttention(d, heads)

    def forward(self, x):  # [L, B * T, D]
        length, bt, d = x.shape
        b = bt // self.T
        x = x.view(length, b, self.T, d)
        msg = self.message_fc(x.mean(0)).view(b, self.T, 1, d)
        msg = msg.permute(1, 2, 0, 3).reshape(self.T, b, d)
        y = self.message_ln(msg)
        msg = msg + self.message_attn(y, y, y, need_weights=False)[0]
        msg = msg.view(self.T, 1, b, d).permute(1, 2, 0, 3)
        x = torch.cat([x, msg], dim=0).reshape(length + 1, -1, d)
        return super().forward(x)


class TMD(nn.Module):
    def __init__(self, d, heads, T, layers=1):
        super().__init__()
        self.resblocks = nn.Sequential(*[CrossFrameBlock(d, heads, T) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class PromptAttention(nn.Module):
    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, q, k, v):
        B, N, C = q.shape
        M = k.shape[1]
        h = self.heads
        q = self.q_proj(q).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        k = self.k_proj(k).reshape(B, M, h, C // h).permute(0, 2, 1, 3)
        v = self.v_proj(v).reshape(B, M, h, C // h).permute(0, 2, 1, 3)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class PromptGeneratorLayer(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.self_attn = PromptAttention(d, heads, dropout)
        self.cross_attn = PromptAttention(d, heads, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), QuickGELU(), nn.Dropout(dropout), nn.Linear(4 * d, d)
        )

    def forward(self, x, visual):
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        x = x + self.cross_attn(self.norm2(x), visual, visual)
        return x + self.dropout(self.mlp(self.norm3(x)))


class SSP(nn.Module):
    def __init__(self, d, heads, layers=2, dropout=0.1):
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.LayerNorm(d))
        self.text_proj = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
        self.out_proj = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
        self.decoder = nn.ModuleList(
            [PromptGeneratorLayer(d, heads, dropout) for _ in range(layers)]
        )

    def forward(self, text, visual):
        visual = self.memory_proj(visual)
        text = self.text_proj(text)
        for layer in self.decoder:
            text = layer(text, visual)
        return self.out_proj(text)


class TFClip(nn.Module):
    """`forward(x [B, T, 3, H, W], cam_label [B], memory)`: the official outputs, in train mode
    `([cls_score, cls_score_proj, cls_score_proj_temp, cls_score_proj_frame], [img_feature,
    img_feature_proj, cls_f_tp], logits)`, in eval mode the 'before' descriptor."""

    def __init__(
        self,
        num_classes,
        num_cameras,
        grid,
        T,
        width=64,
        layers=2,
        heads=4,
        patch=16,
        out=128,
        ssp_heads=2,
        ssp_dropout=0.0,
    ):
        super().__init__()
        self.image_encoder = VisionTransformer(grid, patch, width, layers, heads, out)
        self.cv_embed = nn.Parameter(0.02 * torch.randn(num_cameras, width))
        self.TMD = TMD(width, heads, T)
        self.SSP = SSP(out, ssp_heads, dropout=ssp_dropout)
        self.classifier2 = nn.Linear(width, num_classes, bias=False)
        self.classifier_proj = nn.Linear(out, num_classes, bias=False)
        self.classifier_proj_temp = nn.Linear(width, num_classes, bias=False)
        self.bottleneck = nn.BatchNorm1d(width)
        self.bottleneck_proj = nn.BatchNorm1d(out)
        self.bottleneck_proj_temp = nn.BatchNorm1d(width)
        self.bottleneck_proj_temp2 = nn.BatchNorm1d(width)
        for name in (
            "bottleneck",
            "bottleneck_proj",
            "bottleneck_proj_temp",
            "bottleneck_proj_temp2",
        ):
            getattr(self, name).bias.requires_grad_(False)

    def memory_features(self, x):
        B, T, C, H, W = x.shape
        _, proj = self.image_encoder(x.view(-1, C, H, W))
        return proj[:, 0].view(B, T, -1).mean(1)

    def forward(self, x, cam_label, memory=None):
        B, T, C, H, W = x.shape
        cv = self.cv_embed[cam_label].repeat((1, T)).view(B * T, -1)
        feats, proj = self.image_encoder(x.view(-1, C, H, W), cv)
        img_feature = feats[:, 0].view(B, T, -1).mean(1)
        img_feature_proj = proj[:, 0].view(B, T, -1).mean(1)
        f_sp = self.TMD(feats.detach().permute(1, 0, 2)).permute(1, 0, 2)
        cls_f_sp = f_sp.mean(1)
        cls_f_tp = cls_f_sp.view(B, T, -1).mean(1)
        feat = self.bottleneck(img_feature)
        feat_proj = self.bottleneck_proj(img_feature_proj)
        feat_frame = self.bottleneck_proj_temp(cls_f_sp)
        feat_temp = self.bottleneck_proj_temp2(cls_f_tp)
        if not self.training:
            return torch.cat([img_feature, img_feature_proj, cls_f_tp], dim=1)
        text = memory.unsqueeze(0).expand(B, -1, -1)
        video = proj.view(B, T, -1, proj.shape[-1]).mean(1)
        text = text + self.SSP(text, video)
        logits = torch.einsum("bd,bkd->bk", img_feature_proj, text)
        scores = [
            self.classifier2(feat),
            self.classifier_proj(feat_proj),
            self.classifier_proj_temp(feat_temp),
            self.classifier_proj_temp(feat_frame),
        ]
        return scores, [img_feature, img_feature_proj, cls_f_tp], logits


# ----------------------------------------------------------------------------- losses


def cross_entropy_label_smooth(inputs, targets, epsilon=0.1):
    log_probs = torch.log_softmax(inputs, dim=1)
    onehot = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1)
    onehot = (1 - epsilon) * onehot + epsilon / inputs.shape[1]
    return (-onehot * log_probs).mean(0).sum()


def triplet(features, labels, margin=0.3):
    n = features.shape[0]
    sq = features.pow(2).sum(1, keepdim=True).expand(n, n)
    dist = (sq + sq.t() - 2 * features @ features.t()).clamp(min=1e-12).sqrt()
    is_pos = labels.expand(n, n).eq(labels.expand(n, n).t())
    dist_ap = dist[is_pos].contiguous().view(n, -1).max(1)[0]
    dist_an = dist[~is_pos].contiguous().view(n, -1).min(1)[0]
    return nn.MarginRankingLoss(margin=margin)(dist_an, dist_ap, torch.ones_like(dist_an))


def tfclip_loss(scores, feats, logits, target, T):
    id_loss = sum(cross_entropy_label_smooth(s, target) for s in scores[0:3])
    tri = sum(triplet(f, target) for f in feats)
    loss = 0.25 * id_loss + 1.0 * tri + 1.0 * cross_entropy_label_smooth(logits, target)
    frame_target = target.unsqueeze(1).expand(-1, T).reshape(-1)
    return loss + cross_entropy_label_smooth(scores[3], frame_target) / T


def memory_from(features, labels):
    """The official `generate_cluster_features`: per label, in sorted order, the mean."""
    centers = {}
    for label, feature in zip(labels.tolist(), features, strict=True):
        if label != -1:
            centers.setdefault(label, []).append(feature)
    return torch.stack([torch.stack(centers[k]).mean(0) for k in sorted(centers)])


# ------------------------------------------------------------------------- optimizer


def param_groups(model, base_lr, bias_lr_factor=2.0, wd=1e-4, wd_bias=1e-4):
    groups = []
    for key, value in model.named_parameters():
        if not value.requires_grad:
            continue
        lr, decay = base_lr, wd
        if "bias" in key:
            lr, decay = base_lr * bias_lr_factor, wd_bias
        if "classifier_proj_temp" in key or "arcface" in key:
            lr = lr * 10
        groups.append({"params": [value], "lr": lr, "weight_decay": decay})
    return groups


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    def __init__(self, optimizer, milestones, gamma, warmup_factor, warmup_iters, method="linear"):
        self.milestones, self.gamma = milestones, gamma
        self.warmup_factor, self.warmup_iters, self.method = warmup_factor, warmup_iters, method
        super().__init__(optimizer)

    def get_lr(self):
        factor = 1
        if self.last_epoch < self.warmup_iters:
            if self.method == "constant":
                factor = self.warmup_factor
            else:
                alpha = self.last_epoch / self.warmup_iters
                factor = self.warmup_factor * (1 - alpha) + alpha
        decay = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base * factor * decay for base in self.base_lrs]


# --------------------------------------------------------------------------- mapping


def randomise_(model: TFClip, seed: int = 0) -> TFClip:
    """Every parameter drawn anew (LayerNorm and BN scales near 1, biases and stats away from 0),
    so that no mapping error hides behind a default."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if param.ndim == 1 and name.endswith("weight"):
                param.copy_(1 + 0.2 * noise)
            elif param.ndim < 2:
                param.copy_(0.2 * noise)
            else:
                param.copy_(noise * float(np.prod(param.shape[1:])) ** -0.5)
    torch_mapping.randomise_batch_norms(model, gen)
    return model


def _flax_path(name: str, value: np.ndarray):
    """(collection, path) and the array in Flax layout for one non-encoder tensor name."""
    parts = name.split(".")
    leaf = parts.pop()
    if parts[:2] == ["TMD", "resblocks"]:
        assert parts[2] == "0", name  # one block, as TF-CLIP builds it
        parts = ["TMD", *parts[3:]]
        if parts[1:] and parts[1] == "mlp":
            parts.pop(1)
    joined = []
    for part in parts:  # an nn.Sequential / ModuleList index joins its container's name
        if re.fullmatch(r"\d+", part):
            joined[-1] = f"{joined[-1]}_{part}"
        else:
            joined.append(part)
    if leaf in ("in_proj_weight", "in_proj_bias"):
        joined.append("in_proj")
        leaf = "weight" if leaf == "in_proj_weight" else "bias"
    if leaf == "running_mean":
        return ("batch_stats", *joined, "mean"), value
    if leaf == "running_var":
        return ("batch_stats", *joined, "var"), value
    if leaf == "weight":
        if value.ndim == 2:
            return ("params", *joined, "kernel"), value.T
        return ("params", *joined, "scale"), value
    assert leaf == "bias", name
    return ("params", *joined, "bias"), value


def to_flax_flat(model: TFClip, target_variables, tensors=None) -> dict:
    """Every tensor of `model.state_dict()` (or of `tensors`, a name -> tensor dict such as the
    gradients) mapped onto the Flax variables; strict against `target_variables`."""
    state = tensors if tensors is not None else model.state_dict()
    flat, unused = {}, set()
    for name, tensor in state.items():
        value = tensor.detach().numpy()
        if name.endswith("num_batches_tracked"):
            continue
        if name.startswith("image_encoder."):
            path, rule = clip_pretrained.flax_location(name[len("image_encoder.") :])
            key, value = (
                ("params", "image_encoder", *path),
                clip_pretrained.to_flax_layout(value, rule),
            )
        elif name == "cv_embed":
            key = ("params", "camera", "cv_embed")
        else:
            key, value = _flax_path(name, value)
        if key in flat:
            unused.add(name)
        flat[key] = np.asarray(value, np.float32)
    if tensors is not None:  # gradients: params only
        target_variables = {"params": target_variables["params"]}
    return torch_mapping.check_one_to_one(flat, target_variables, unused)
