"""The features file `vreid-extract` writes and `vreid-search` and `vreid-relink` read.

One `.npz` (numpy's zip of arrays; no pickles) with one row per tracklet:

  features       float32 [N, D]  the model's tracklet features, as evaluation computes them
                                 (not normalised: searching applies the run's
                                 `config.eval.normalize_features` and `distance`, as evaluation does)
  track_ids      str [N]         the tracklet's name: its folder name, or its MOT track id
  cameras        str [N]         its camera: the `<camera>/` folder level, or the MOT file's camera
  first_frame    int64 [N]       first and last frame number (parsed from file names, or MOT frames)
  last_frame     int64 [N]
  num_frames     int32 [N]       frames used
  sources        str [N]         the tracklet folder, or the MOT track file
  preview_frames str [N, 4]      up to four frames to show the tracklet with: an image path, or
                                 '<video>#<0-based frame index>'; '' when fewer
  preview_boxes  float32 [N, 4, 4]  the person box in each preview frame: x, y (0-based pixel
                                 of its top-left corner), w, h; NaN for a whole image (folders)
  provenance     JSON str        the model and checkpoint the features came from, with the run's
                                 config (`trained_model.TrainedModel.provenance`)
"""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np

from vreid_jax import errors, files

NUM_PREVIEWS = 4

_ROW_FIELDS = {
    # name: (dtype, trailing shape)
    "track_ids": (str, ()),
    "cameras": (str, ()),
    "first_frame": (np.int64, ()),
    "last_frame": (np.int64, ()),
    "num_frames": (np.int32, ()),
    "sources": (str, ()),
    "preview_frames": (str, (NUM_PREVIEWS,)),
    "preview_boxes": (np.float32, (NUM_PREVIEWS, 4)),
}


class FeatureFileError(errors.UserError):
    """A features file that cannot be read or does not match what it is used with."""


@dataclasses.dataclass
class TrackletFeatures:
    """Features of N tracklets with what identifies them; see the module docstring for each field."""

    features: np.ndarray
    track_ids: np.ndarray
    cameras: np.ndarray
    first_frame: np.ndarray
    last_frame: np.ndarray
    num_frames: np.ndarray
    sources: np.ndarray
    preview_frames: np.ndarray
    preview_boxes: np.ndarray
    provenance: dict

    def __post_init__(self):
        self.features = np.asarray(self.features, np.float32)
        if self.features.ndim != 2:
            raise FeatureFileError(
                f"features must be [num_tracklets, dim]; got shape {self.features.shape}."
            )
        n = len(self.features)
        for name, (dtype, trailing) in _ROW_FIELDS.items():
            value = np.asarray(getattr(self, name), dtype=dtype)
            if value.shape != (n, *trailing):
                raise FeatureFileError(
                    f"{name} has shape {value.shape}; expected {(n, *trailing)} for {n} tracklets."
                )
            setattr(self, name, value)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    @property
    def model(self) -> str:
        return self.provenance.get("model", "?")

    @property
    def checkpoint(self) -> str:
        return self.provenance.get("checkpoint", "?")

    def select(self, rows) -> TrackletFeatures:
        """The given rows (indices or a boolean mask), same provenance."""
        fields = {name: getattr(self, name)[rows] for name in ("features", *_ROW_FIELDS)}
        return TrackletFeatures(**fields, provenance=self.provenance)

    def check_compatible(self, other: TrackletFeatures, what: str, other_what: str) -> None:
        """Features of two files are comparable only from the same model and checkpoint."""
        if self.dim != other.dim:
            raise FeatureFileError(
                f"{other_what} has {other.dim}-dimensional features, {what} {self.dim}: they come "
                f"from different models ({other.model} vs {self.model}). Extract both with the same "
                "workdir and checkpoint."
            )
        if (self.model, self.checkpoint) != (other.model, other.checkpoint):
            raise FeatureFileError(
                f"{other_what} comes from {other.model} at {other.checkpoint}, {what} from "
                f"{self.model} at {self.checkpoint}: features of different checkpoints are not "
                "comparable. Extract both with the same workdir and checkpoint."
            )


def concatenate(parts: list[TrackletFeatures]) -> TrackletFeatures:
    """Rows of several compatible feature sets, in order (provenance of the first)."""
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        first.check_compatible(part, "part 0", f"part {i}")
    fields = {
        name: np.concatenate([getattr(p, name) for p in parts])
        for name in ("features", *_ROW_FIELDS)
    }
    return TrackletFeatures(**fields, provenance=first.provenance)


def save(path: str, tracklets: TrackletFeatures, extra: dict | None = None) -> None:
    """Writes `path` (.npz) atomically: a reader sees the previous file or the whole new one.

    `extra` maps more key names to JSON-able records, stored as JSON strings beside the rows (the
    search index keeps its own record so); `load` ignores keys it does not know.
    """
    arrays = {name: getattr(tracklets, name) for name in ("features", *_ROW_FIELDS)}
    arrays["provenance"] = np.array(json.dumps(tracklets.provenance))
    for key, record in (extra or {}).items():
        if key in arrays:
            raise ValueError(f"save: extra key {key!r} is a features file field.")
        arrays[key] = np.array(json.dumps(record))
    with files.atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load(path: str) -> TrackletFeatures:
    """Reads a features file; FeatureFileError naming the file and the key for a bad one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise FeatureFileError(f"{path}: no such features file.") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FeatureFileError(
            f"{path} is not a features file written by `vreid-extract` ({e})."
        ) from None
    missing = sorted({"features", "provenance", *_ROW_FIELDS} - set(arrays))
    if missing:
        raise FeatureFileError(
            f"{path} lacks {missing}: not a features file written by `vreid-extract`."
        )
    try:
        provenance = json.loads(str(arrays.pop("provenance")))
        return TrackletFeatures(
            **{k: arrays[k] for k in ("features", *_ROW_FIELDS)}, provenance=provenance
        )
    except (FeatureFileError, json.JSONDecodeError) as e:
        raise FeatureFileError(f"{path}: {e}") from None
