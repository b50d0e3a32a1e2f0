"""TFDS builders, one per dataset, writing one `tf.train.Example` per tracklet.

Frames are stored as the original file bytes (JPEG or PNG, never re-encoded) unless a resize was
asked for, in which case each frame is resized (bicubic, as torchvision's `interpolation=3`) and
encoded again in its own format. Records are written in key order with shuffling disabled, so
reading a split back yields tracklets sorted by key. The builders never touch the network: they
read only `manual_dir`, and `data_prep.build` passes `data_dir` and a GCS-free `DownloadConfig`.
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from data_prep import registry

VERSION = "1.0.0"

# Never look for pre-computed dataset info on Google Cloud Storage: these datasets are not there,
# and a cluster node or a test machine may have no network (this TFDS already defaults to True).
tfds.core.utils.gcs_utils._is_gcs_disabled = True


def _features(image_format: str) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "frames": tfds.features.Sequence(
                tfds.features.Image(shape=(None, None, 3), encoding_format=image_format)
            ),
            "frame_numbers": tfds.features.Sequence(np.int32),
            "num_frames": np.int32,
            "pid": np.int64,
            "label": np.int64,
            "camid": np.int32,
            "tracklet_key": tfds.features.Text(),
            "is_junk": np.bool_,
            "is_distractor": np.bool_,
        }
    )


def _resized(data: bytes, size: tuple[int, int], image_format: str) -> bytes:
    """Resizes encoded frame bytes to `size` = (height, width) and encodes them again."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    if image_format == "jpeg":
        image.save(out, format="JPEG", quality=95)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


class _ReIdBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder logic; subclasses only name their dataset."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Tracklet records with original frame bytes."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS derives this from the package's import spec, which fails when `data_prep` is
        # imported as a namespace package (e.g. through an editable install); it only serves to
        # look for optional checksum/citation files next to the code.
        return epath.Path(__file__).parent

    def __init__(self, *, skip_bad: bool = False, resize: tuple[int, int] | None = None, **kwargs):
        self._skip_bad = skip_bad
        self._resize = tuple(resize) if resize else None
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        module = registry.get(self.name)
        # Built directly (not from a configs file) so the builder works outside a TFDS package.
        return tfds.core.DatasetInfo(
            builder=self,
            description=module.__doc__,
            features=_features(module.IMAGE_FORMAT),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        index = registry.parse(self.name, os.fspath(dl_manager.manual_dir), skip_bad=self._skip_bad)
        # The reader's summaries and split filters come from this table, so no read of the shards
        # is needed for them: [key, split, pid, camid, num_frames, is_junk, is_distractor, label].
        self.info.metadata.update(
            {
                "resize": list(self._resize) if self._resize else None,
                "image_format": index.image_format,
                "splits": index.splits,
                "skipped": index.skipped,
                "tracklets": [
                    [
                        t.key,
                        t.split,
                        t.pid,
                        t.camid,
                        len(t.frame_paths),
                        t.is_junk,
                        t.is_distractor,
                        t.label,
                    ]
                    for t in index.tracklets
                ],
            }
        )
        self.skipped = index.skipped
        return {
            split: self._generate_examples([t for t in index.tracklets if t.split == split])
            for split in registry.stored_splits(self.name)
        }

    def _generate_examples(self, tracklets):
        for t in tracklets:
            frames = []
            for path in t.frame_paths:
                with open(path, "rb") as f:
                    data = f.read()
                if self._resize:
                    data = _resized(data, self._resize, self.info.metadata["image_format"])
                frames.append(data)
            yield (
                t.key,
                {
                    "frames": frames,
                    "frame_numbers": np.asarray(t.frame_numbers, np.int32),
                    "num_frames": len(frames),
                    "pid": t.pid,
                    "label": t.label,
                    "camid": t.camid,
                    "tracklet_key": t.key,
                    "is_junk": t.is_junk,
                    "is_distractor": t.is_distractor,
                },
            )


def _subclass(name: str) -> type:
    module = registry.get(name)
    cls_name = name.capitalize()
    attrs = {
        "name": name,
        "MANUAL_DOWNLOAD_INSTRUCTIONS": module.INSTRUCTIONS,
        "__module__": __name__,
    }
    return type(cls_name, (_ReIdBuilder,), attrs)


Mars = _subclass("mars")
Dukev = _subclass("dukev")
Ilidsvid = _subclass("ilidsvid")
Prid2011 = _subclass("prid2011")
Lsvid = _subclass("lsvid")
BUILDERS = {cls.name: cls for cls in (Mars, Dukev, Ilidsvid, Prid2011, Lsvid)}
