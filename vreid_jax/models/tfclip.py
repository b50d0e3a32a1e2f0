"""TF-CLIP (Yu et al., AAAI 2024) in Flax: the CLIP ViT per frame, Temporal Memory Diffusion,
the Sequence-Specific Prompt over the CLIP-Memory, four BNNecks and the bias-free classifiers.

Facts from the official code, `AsuradaYuci/TF-CLIP` (file:line; written here anew, not copied):

* Clips `[B, T, H, W, 3]` go through the image encoder frame by frame, with the camera embedding
  `sie_coe * cv_embed[camera]` repeated over the T frames of a clip on every class token
  (`model/make_model_clipreid.py`:238-252). The class token after `ln_post` (width) and its
  projection (output_dim) are averaged over T: `img_feature`, `img_feature_proj` (256-264).
* TMD (`CrossFramelAttentionBlock`, 55-102; one block, width 768 and 12 heads for ViT-B/16, 193)
  runs on the DETACHED `ln_post` tokens (`image_features.detach()`, 266): per frame, a message
  token `message_fc(mean of the frame's tokens)` (86); the T message tokens of a clip attend to
  each other after `message_ln`, residually (88-94); each frame's tokens get its message token
  appended (96), then a pre-LN block over the L+1 tokens of the frame: `x + attn(ln_1(x))`,
  `x + mlp(ln_2(x))`, MLP width -> 4 width -> width with QuickGELU (98-101; no drop path, 111).
  All LayerNorms there are CLIP's (`model/clip/model.py`'s float32 LayerNorm), the attentions
  torch `nn.MultiheadAttention` (fused biased in_proj, biased out_proj).
* The frame feature is the mean of the block's L+1 output tokens, message token included
  (`cls_f_sp`, 273); the temporal feature its mean over T (`cls_f_tp`, 274-275).
* Four BatchNorm1d necks with a frozen bias (`bias.requires_grad_(False)`, 150-163), weight 1 and
  bias 0 at init (`weights_init_kaiming`, 24-27): `bottleneck` on img_feature,
  `bottleneck_proj` on img_feature_proj, `bottleneck_proj_temp` on every frame's cls_f_sp,
  `bottleneck_proj_temp2` on cls_f_tp (278-281).
* Bias-free classifiers, weights N(0, 0.001) (`weights_init_classifier`, 29-34; 141-148):
  `classifier2` on the first neck, `classifier_proj` on the second, and `classifier_proj_temp`
  on BOTH the frame neck and the temporal neck (291-294). The official model also builds
  `classifier_proj_temp2`, which its forward never uses (so it is never trained): not built here.
* SSP (`ImageSpecificPrompt`, 389-428; training only, 283-289): the memory `[C, D]` repeated per
  clip goes through `text_proj` (LN, Linear), 2 decoder layers (`PromptGeneratorLayer`, 356-386:
  pre-LN self-attention over the C memory rows, pre-LN cross-attention to the clip's tokens,
  pre-LN MLP with QuickGELU; attention q/k/v without bias, output projection with bias, scale
  head_dim ** -0.5, heads D // 64, dropout 0.1 after each attention projection, inside and after
  the MLP) and `out_proj` (LN, Linear); the clip's tokens are the projected tokens averaged over
  T (285-286), through `memory_proj` (LN, Linear, LN). Linear weights start as trunc_normal
  std .02 (timm: bounds +-2 absolute, a plain normal at that std), biases 0 (411-418). The
  module's `alpha` and `norm` (392, 408) are never used in its forward: not built here.
* Video-to-memory logits: `img_feature_proj . (memory + SSP(memory, tokens))` per class, no
  normalisation and no temperature (287-289).
* Evaluation (`TEST.NECK_FEAT: 'before'`, `configs/vit_clipreid.yml`:70): the descriptor is
  `[img_feature, img_feature_proj, cls_f_tp]`, 768 + 512 + 768 = 2048-d for ViT-B/16, before
  any neck (302); 'after' would be `[feat, feat_proj]` (298-300). The official dense test
  averages this descriptor over a tracklet's chunks of T frames
  (`processor/processor_clipreid_stage2.py`:266-284); the chunking is the evaluator's.

Frozen neck bias: the bias stays a `params` leaf (so checkpoints and converters see torch's
names) and is used through `jax.lax.stop_gradient`: its gradient is exactly zero. The optimizer
must also give it no update (torch leaves it out of the optimizer, `solver/
make_optimizer_prompt.py`:26-27), since a coupled L2 term would otherwise move a non-zero bias:
`is_frozen` names those leaves for `training/tfclip_optim.py`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vreid_jax.models import batch_norm, clip_vit, layers

# `nn.init.normal_(std=0.001)` of the classifiers (`model/make_model_clipreid.py`:32).
CLASSIFIER_STD = 1e-3
# timm's trunc_normal_(std=.02) of SSP's Linear weights (`model/make_model_clipreid.py`:413).
SSP_INIT_STD = 0.02
NECKS = ("bottleneck", "bottleneck_proj", "bottleneck_proj_temp", "bottleneck_proj_temp2")


def is_frozen(path: tuple[str, ...]) -> bool:
    """Whether the params leaf at `path` is one of the four frozen BNNeck biases."""
    return len(path) >= 2 and path[-2] in NECKS and path[-1] == "bias"


class TFClipTrainOutputs(NamedTuple):
    """What the loss needs (`model/make_model_clipreid.py`:295).

    Attributes:
      id_logits: (classifier2, classifier_proj, classifier_proj_temp on the temporal neck),
        each `[B, C]`.
      frame_logits: `[B * T, C]`, classifier_proj_temp on the frame neck, clip-major.
      features: (img_feature `[B, width]`, img_feature_proj `[B, output_dim]`, cls_f_tp
        `[B, width]`), before the necks: the triplet losses' inputs.
      memory_logits: `[B, C]`, the video-to-memory logits.
    """

    id_logits: tuple[jax.Array, jax.Array, jax.Array]
    frame_logits: jax.Array
    features: tuple[jax.Array, jax.Array, jax.Array]
    memory_logits: jax.Array


def _dense(features: int, fan_in: int, name: str, use_bias: bool = True, std=None, dtype=None):
    """torch's default Linear init, or a normal of `std` with zero bias."""
    if std is None:
        kernel, bias = layers.torch_default_kernel, layers.torch_default_bias(fan_in)
    else:
        kernel, bias = nn.initializers.normal(std), nn.initializers.zeros
    return nn.Dense(
        features, use_bias=use_bias, kernel_init=kernel, bias_init=bias, dtype=dtype, name=name
    )


def _class_token(x):
    """`x[:, :, 0]` of `[B, T, L, D]` tokens, as a slice: jnp indexing under a symbolic batch
    (an exported model's) is a gather, which the ONNX and TFLite converters do not take."""
    return jax.lax.index_in_dim(x, 0, axis=2, keepdims=False)


class TemporalMemoryDiffusion(nn.Module):
    """One TMD block: frames' tokens `[B, T, L, D]` -> `[B, T, L + 1, D]` (message token last)."""

    width: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, t, length, d = x.shape
        message = _dense(d, d, "message_fc", dtype=self.dtype)(jnp.mean(x, axis=2))  # [B, T, D]
        attend = clip_vit.SelfAttention(self.width, self.heads, self.dtype, name="message_attn")
        message = message + attend(clip_vit.layer_norm(message, "message_ln"))  # across T
        x = jnp.concatenate([x, message[:, :, None, :]], axis=2).reshape(b * t, length + 1, d)
        x = clip_vit.residual_attention(x, self.width, self.heads, self.dtype)  # Per frame.
        return x.reshape(b, t, length + 1, d)


class PromptAttention(nn.Module):
    """SSP's `MulitHeadAttention` (`model/make_model_clipreid.py`:323-353): separate q/k/v
    projections without bias, scale head_dim ** -0.5, an output projection with bias."""

    width: int
    heads: int
    dropout: float

    @nn.compact
    def __call__(self, q, kv, deterministic: bool):
        head_dim = self.width // self.heads

        def split(name, x):
            x = _dense(self.width, self.width, name, use_bias=False, std=SSP_INIT_STD)(x)
            return x.reshape(*x.shape[:-1], self.heads, head_dim)

        out = jax.nn.dot_product_attention(
            split("q_proj", q), split("k_proj", kv), split("v_proj", kv), scale=head_dim**-0.5
        )
        out = _dense(self.width, self.width, "proj", std=SSP_INIT_STD)(
            out.reshape(*q.shape[:-1], self.width)
        )
        return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class PromptGeneratorLayer(nn.Module):
    width: int
    heads: int
    dropout: float

    @nn.compact
    def __call__(self, x, visual, deterministic: bool):
        attention = lambda name: PromptAttention(self.width, self.heads, self.dropout, name=name)  # noqa: E731
        y = clip_vit.layer_norm(x, "norm1")
        x = x + attention("self_attn")(y, y, deterministic)
        x = x + attention("cross_attn")(clip_vit.layer_norm(x, "norm2"), visual, deterministic)
        y = _dense(4 * self.width, self.width, "mlp_0", std=SSP_INIT_STD)(
            clip_vit.layer_norm(x, "norm3")
        )
        y = nn.Dropout(self.dropout)(clip_vit.quick_gelu(y), deterministic=deterministic)
        y = _dense(self.width, 4 * self.width, "mlp_3", std=SSP_INIT_STD)(y)
        return x + nn.Dropout(self.dropout)(y, deterministic=deterministic)


class SequenceSpecificPrompt(nn.Module):
    """SSP: memory `[B, C, D]` and a clip's projected tokens `[B, L, D]` -> `[B, C, D]`, the
    residual added to the memory. Indices in names follow torch's `nn.Sequential` positions."""

    width: int
    heads: int
    layers: int = 2
    dropout: float = 0.1

    @nn.compact
    def __call__(self, memory, visual, deterministic: bool):
        d = self.width
        visual = clip_vit.layer_norm(visual, "memory_proj_0")
        visual = _dense(d, d, "memory_proj_1", std=SSP_INIT_STD)(visual)
        visual = clip_vit.layer_norm(visual, "memory_proj_2")
        text = _dense(d, d, "text_proj_1", std=SSP_INIT_STD)(
            clip_vit.layer_norm(memory, "text_proj_0")
        )
        for i in range(self.layers):
            layer = PromptGeneratorLayer(d, self.heads, self.dropout, name=f"decoder_{i}")
            text = layer(text, visual, deterministic)
        return _dense(d, d, "out_proj_1", std=SSP_INIT_STD)(clip_vit.layer_norm(text, "out_proj_0"))


class FrozenBiasNeck(nn.Module):
    """BatchNorm1d with torch's numerics (`batch_norm.batch_normalize`: two-pass variance,
    unbiased running variance, momentum 0.1) whose bias gets no gradient (`stop_gradient`)."""

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, use_running_average: bool):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = jax.lax.stop_gradient(
            self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        )
        mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        x = x.astype(jnp.float32)
        if use_running_average:
            return (x - mean.value) * jax.lax.rsqrt(var.value + self.epsilon) * scale + bias
        weight = jnp.ones(x.shape[:-1] + (1,), jnp.float32)
        y, batch_mean, batch_var = batch_norm.batch_normalize(
            x, weight, scale, bias, self.epsilon, jnp.float32
        )
        if not self.is_initializing():
            n = x.shape[0]
            keep = self.momentum
            mean.value = keep * mean.value + (1 - keep) * batch_mean
            var.value = keep * var.value + (1 - keep) * batch_var * n / max(n - 1, 1)
        return y


class TFClip(nn.Module):
    """TF-CLIP over clips `[B, T, H, W, 3]` and cameras `[B]` (None: cameras it never saw).

    `__call__(clips, cameras, memory=None, train=False)`: in training (`train=True`, `memory`
    `[num_classes, output_dim]` given) a `TFClipTrainOutputs`, and the neck statistics updated
    (`mutable=['batch_stats']`; SSP's dropout needs a 'dropout' rng unless `ssp_dropout` is 0);
    in evaluation the descriptor `[B, 2 width + output_dim]` ('before') or
    `[B, width + output_dim]` ('after'). SSP runs in training only.

    Attributes:
      num_classes, num_cameras: training identities and cameras.
      width, layers, heads, patch_size, output_dim: the CLIP ViT (ViT-B/16: 768, 12, 12, 16, 512).
      sie_coe: the camera embedding's factor (1.0 in TF-CLIP's recipe).
      ssp_heads: SSP's heads; None is TF-CLIP's output_dim // 64.
      ssp_dropout: SSP's dropout (0.1 in TF-CLIP).
      neck_feat: 'before' (TF-CLIP's recipe) or 'after'.
    """

    num_classes: int
    num_cameras: int
    width: int = 768
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    output_dim: int = 512
    sie_coe: float = 1.0
    ssp_heads: int | None = None
    ssp_dropout: float = 0.1
    neck_feat: str = "before"
    dtype: Any = jnp.float32

    def setup(self):
        self.image_encoder = clip_vit.ClipVisionTransformer(
            self.width, self.layers, self.heads, self.patch_size, self.output_dim, self.dtype
        )
        self.camera = clip_vit.CameraEmbedding(self.num_cameras, self.width, self.sie_coe)
        self.TMD = TemporalMemoryDiffusion(self.width, self.heads, self.dtype)
        heads = self.ssp_heads or self.output_dim // 64
        self.SSP = SequenceSpecificPrompt(self.output_dim, heads, dropout=self.ssp_dropout)
        classifier = lambda name: nn.Dense(  # noqa: E731
            self.num_classes,
            use_bias=False,
            kernel_init=nn.initializers.normal(CLASSIFIER_STD),
            name=name,
        )
        self.classifier2 = classifier("classifier2")
        self.classifier_proj = classifier("classifier_proj")
        self.classifier_proj_temp = classifier("classifier_proj_temp")
        self.bottleneck = FrozenBiasNeck()
        self.bottleneck_proj = FrozenBiasNeck()
        self.bottleneck_proj_temp = FrozenBiasNeck()
        self.bottleneck_proj_temp2 = FrozenBiasNeck()

    def _encode(self, clips, camera_embedding):
        """Every frame through the encoder, with the clip's camera embedding `[B, width]` (or
        `[width]` for all, or None)."""
        b, t = clips.shape[:2]
        frames = clips.reshape(b * t, *clips.shape[2:])
        if camera_embedding is not None:
            camera_embedding = jnp.broadcast_to(camera_embedding, (b, self.width))
            camera_embedding = jnp.repeat(camera_embedding, t, axis=0)
        out = self.image_encoder(frames, camera_embedding)
        return (
            out.tokens.reshape(b, t, *out.tokens.shape[1:]),
            out.projected.reshape(b, t, *out.projected.shape[1:]),
        )

    def memory_features(self, clips):
        """The CLIP-Memory's input for a batch of clips: the projected class token averaged over T,
        without camera embedding (`model/make_model_clipreid.py`:201-216): `[B, output_dim]`."""
        _, projected = self._encode(clips, None)
        return jnp.mean(_class_token(projected), axis=1)

    def __call__(self, clips, cameras, memory=None, train: bool = False):
        b, t = clips.shape[:2]
        tokens, projected = self._encode(clips, self.camera(cameras))
        img_feature = jnp.mean(_class_token(tokens), axis=1)
        img_feature_proj = jnp.mean(_class_token(projected), axis=1)
        diffused = self.TMD(jax.lax.stop_gradient(tokens))
        frame_feature = jnp.mean(diffused, axis=2)  # [B, T, width], message token included
        temporal_feature = jnp.mean(frame_feature, axis=1)

        feat = self.bottleneck(img_feature, not train)
        feat_proj = self.bottleneck_proj(img_feature_proj, not train)
        feat_frame = self.bottleneck_proj_temp(frame_feature.reshape(b * t, -1), not train)
        feat_temp = self.bottleneck_proj_temp2(temporal_feature, not train)

        if not train:
            if self.neck_feat == "after":
                return jnp.concatenate([feat, feat_proj], axis=-1)
            return jnp.concatenate([img_feature, img_feature_proj, temporal_feature], axis=-1)

        if memory is None:
            raise ValueError("TF-CLIP's training forward needs the CLIP-Memory.")
        memory = jnp.broadcast_to(jax.lax.stop_gradient(memory), (b, *memory.shape)).astype(
            jnp.float32
        )
        prompted = memory + self.SSP(memory, jnp.mean(projected, axis=1), deterministic=False)
        memory_logits = jnp.einsum("bd,bkd->bk", img_feature_proj, prompted)
        return TFClipTrainOutputs(
            id_logits=(
                self.classifier2(feat),
                self.classifier_proj(feat_proj),
                self.classifier_proj_temp(feat_temp),
            ),
            frame_logits=self.classifier_proj_temp(feat_frame),
            features=(img_feature, img_feature_proj, temporal_feature),
            memory_logits=memory_logits,
        )


class TFClipReid(TFClip):
    """TF-CLIP under the registry's call convention (`registry.ModelSpec`), the CLIP-Memory held in
    the model's state.

    `__call__(clips, train=False, mask=None, cameras=None)`: in training the `TFClipTrainOutputs`
    against the memory; in evaluation `(descriptor,)`. The memory `[num_classes, output_dim]` is
    the variable `batch_stats/clip_memory` (zeros at init; `training.kinds` sets it from the
    pretrained encoder before the first step), so that it is checkpointed and restored with the
    rest of the state and never trained. `cameras=None` means cameras the model never saw (the
    mean camera embedding, `clip_vit.CameraEmbedding`), the rule for your own tracklets (extract,
    export). Initialisation creates every parameter (camera table, SSP,
    classifiers), whatever `train` says.
    """

    def setup(self):
        super().setup()
        self.clip_memory = self.variable(
            "batch_stats",
            "clip_memory",
            jnp.zeros,
            (self.num_classes, self.output_dim),
            jnp.float32,
        )

    def __call__(self, clips, train: bool = False, mask=None, cameras=None):  # noqa: D102
        del mask  # Clips are whole: nothing is padded within a clip.
        if self.is_initializing():  # Every parameter, the training-only ones included.
            TFClip.__call__(self, clips, cameras, self.clip_memory.value, True)
        if train:
            return TFClip.__call__(self, clips, cameras, self.clip_memory.value, True)
        return (TFClip.__call__(self, clips, cameras, None, False),)


def identity_memory(features, labels, num_classes: int, combine=None) -> np.ndarray:
    """The CLIP-Memory: per identity, the mean of its tracklets' memory features.

    TF-CLIP's procedure (`processor/processor_clipreid_stage2.py`:50-100, before any training
    step): every training tracklet, all its frames in chunks of T (`sample='dense'`, test
    transforms, `datasets/make_dataloader_clipreid.py`:141 and 159-163), each chunk through
    `memory_features` (projected class token, no camera, averaged over T), the chunks averaged
    into one vector per tracklet (82-86); then the plain mean over each identity's tracklets, in
    label order, unnormalised (51-64); labels -1 are skipped (55). The official run computes
    under float16 autocast (83); here float32.

    Args:
      features: `[N, D]` per-tracklet features (`memory_features` averaged over its chunks).
      labels: `[N]` training labels in [0, num_classes) (or -1, skipped).
      num_classes: rows of the memory; every class must have a tracklet.
      combine: with several processes, each holding all the tracklets of its identities (a
        multi-host run's split), a function that sums an array over the processes: each process
        computes its identities' rows (zeros elsewhere), `combine` adds them up.

    Returns:
      `[num_classes, D]` float32.
    """
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels).reshape(-1)
    keep = labels >= 0
    features, labels = features[keep], labels[keep]
    counts = np.bincount(labels, minlength=num_classes)
    if len(counts) > num_classes:
        raise ValueError(f"Labels up to {labels.max()} for a memory of {num_classes} classes.")
    sums = np.zeros((num_classes, features.shape[1]), np.float64)
    np.add.at(sums, labels, features)
    memory = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    if combine is not None:
        holders = combine((counts > 0).astype(np.int32))
        if np.any(holders > 1):
            raise ValueError("An identity's tracklets are on several processes.")
        memory, counts = combine(memory), holders
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0)
        raise ValueError(
            f"The CLIP-Memory needs one tracklet or more of each of the {num_classes} classes; "
            f"missing {missing[:10].tolist()}."
        )
    return memory
