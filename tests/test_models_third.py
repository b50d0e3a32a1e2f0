"""A third model joins through the registry alone: built, trained and evaluated end to end without
any change to the trainer or the evaluator."""

import json

import jax.numpy as jnp
from flax import linen as nn
from helpers import tiny_config

from vreid_jax.models import registry
from vreid_jax.training import loop


class MeanColour(nn.Module):
    """Features from the clip's mean colour per image row: about the smallest re-ID model."""

    num_classes: int

    @nn.compact
    def __call__(self, clips, train: bool, mask=None):
        del train, mask
        rows = clips.mean(axis=(1, 3)).reshape(clips.shape[0], -1)  # [B, H * 3]
        features = nn.Dense(16)(rows)
        return features, nn.Dense(self.num_classes)(features).astype(jnp.float32)


def test_a_registered_model_trains_and_evaluates(monkeypatch, tmp_path, tiny_data_dir):
    toy = registry.ModelSpec(
        build=lambda model_config, num_classes: MeanColour(num_classes),
        extraction=registry.CLIP_AVERAGE,
    )
    monkeypatch.setitem(registry.MODELS, "mean_colour", toy)
    config = tiny_config(
        "nl3d",
        **{"model.name": "mean_colour", "data.data_dir": tiny_data_dir, "num_train_steps": 2},
    )
    record = loop.train_and_evaluate(config, str(tmp_path))
    assert record["model"] == "mean_colour" and record["step"] == 2
    assert 0 < record["mAP"] <= 1 and record["num_query"] > 0
    assert json.loads((tmp_path / "results.json").read_text()) == record
