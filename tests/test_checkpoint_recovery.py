"""Checkpoint recovery, as a fresh process sees it: a damaged newest step is detected, moved to the
quarantine folder and skipped; nothing unusable is restored; the skipped step can be saved again."""

import json
import os
import shutil

import numpy as np
import pytest

from vreid_jax import checkpoint
from vreid_jax.training.state import TrainState


def _state(value: float) -> TrainState:
    """A state with the real attribute structure (TrainState), random-looking (incompressible)."""
    rng = np.random.default_rng(int(value))
    return TrainState(
        step=np.asarray(value, np.int32),
        params={"conv": {"kernel": rng.normal(size=(64, 64)).astype(np.float32) + value}},
        batch_stats={"bn": {"mean": np.full((64,), value, np.float32)}},
        opt_state=(np.zeros((3,), np.float32),),
    )


def _target() -> TrainState:
    return TrainState(
        step=np.zeros((), np.int32),
        params={"conv": {"kernel": np.zeros((64, 64), np.float32)}},
        batch_stats={"bn": {"mean": np.zeros((64,), np.float32)}},
        opt_state=(np.zeros((3,), np.float32),),
    )


def _save(directory, *steps):
    with checkpoint.Checkpointer(str(directory), keep=5) as ckpt:
        for step in steps:
            ckpt.save(step, _state(step), {"dataset": "mars"})


def _largest_data_file(step_dir):
    paths = [os.path.join(r, n) for r, _, names in os.walk(step_dir / "state") for n in names]
    return max(paths, key=os.path.getsize)


def _truncate(step_dir):
    path = _largest_data_file(step_dir)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _zero_middle(step_dir):
    path = _largest_data_file(step_dir)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\0" * (size // 3))


def _change_recorded_checksum(step_dir):
    """Stands for any change of the array bytes that still decodes: the CRC-32 no longer matches."""
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    meta["arrays"]["params/conv/kernel"]["crc32"] ^= 1
    path.write_text(json.dumps(meta))


DAMAGE = {
    "truncated data file": _truncate,
    "zeroed bytes": _zero_middle,
    "deleted _METADATA": lambda d: os.remove(d / "state" / "_METADATA"),
    "missing ocdbt.process_0": lambda d: shutil.rmtree(d / "state" / "ocdbt.process_0"),
    "changed bytes": _change_recorded_checksum,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_newest_is_quarantined_and_skipped(tmp_path, damage):
    directory = tmp_path / "checkpoints"
    _save(directory, 1, 2)
    DAMAGE[damage](directory / "2")

    with checkpoint.Checkpointer(str(directory), keep=5) as ckpt:  # A fresh process.
        state, meta, step = ckpt.restore(_target())
        assert step == 1 and meta["dataset"] == "mars"
        np.testing.assert_array_equal(
            state.params["conv"]["kernel"], _state(1).params["conv"]["kernel"]
        )
        assert ckpt.all_steps() == [1]
        # The evidence is kept, and training can save step 2 again (no crash loop).
        assert [name.split("-")[0] for name in os.listdir(ckpt.quarantine)] == ["2"]
        ckpt.save(2, _state(2), {"dataset": "mars"})
    with checkpoint.Checkpointer(str(directory)) as ckpt:
        assert ckpt.restore(_target())[2] == 2


def test_no_usable_checkpoint_is_an_error_naming_the_folder(tmp_path):
    directory = tmp_path / "checkpoints"
    _save(directory, 1)
    _zero_middle(directory / "1")
    with (
        checkpoint.Checkpointer(str(directory)) as ckpt,
        pytest.raises(
            checkpoint.CorruptCheckpointError, match=f"No usable checkpoint in {directory}.*step 1"
        ),
    ):
        ckpt.restore(_target())
    assert (directory / "1").is_dir()  # Nothing is moved when there is nothing to fall back to.


def test_another_model_is_a_mismatch_not_a_fallback(tmp_path):
    directory = tmp_path / "checkpoints"
    _save(directory, 1, 2)
    target = _target().replace(params={"conv": {"kernel": np.zeros((64, 32), np.float32)}})
    with (
        checkpoint.Checkpointer(str(directory)) as ckpt,
        pytest.raises(checkpoint.CheckpointMismatchError, match=r"step 2 .*params/conv/kernel"),
    ):
        ckpt.restore(target)
    assert not (tmp_path / "checkpoints.quarantine").exists()


def test_a_failed_background_save_is_reported_naming_its_step(tmp_path, monkeypatch):
    with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
        ckpt.save(1, _state(1), {})
        ckpt.wait()

        def disk_full():
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(ckpt._manager, "check_for_errors", disk_full)
        with pytest.raises(checkpoint.CheckpointSaveError, match="step 1 .*No space left"):
            ckpt.save(2, _state(2), {})
        monkeypatch.undo()
