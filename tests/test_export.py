"""`python -m vreid_jax.deploy.export`: every format gives the features `vreid-extract` gives for the
same tracklets (several lengths, symbolic batch and length), the ONNX converter's primitives equal
jax, and clear errors."""

import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import checkpointed_workdir, run_command, tiny_config
from PIL import Image

from vreid_jax import errors
from vreid_jax.deploy import export, extract, onnx_writer, trained_model
from vreid_jax.deploy.tracks import sources
from vreid_jax.evaluation import features as features_lib
from vreid_jax.models import registry

# GLTR: (batch, padded length, real lengths) per call. NL3D: tracklet lengths, one call each over
# its clips (tiny config: clips of 4, so one clip, then three with the last one padded).
GLTR_CASES = [(1, 3, [3]), (2, 8, [8, 5]), (2, 17, [17, 12])]
NL3D_LENGTHS = [4, 10]
RTOL = 1e-4
# TF-CLIP averages clips as NL3D does; its export takes no camera (`registry.UNKNOWN_CAMERAS`).
MODELS = ("gltr", "nl3d", "tfclip")
CLIP_AVERAGE = ("nl3d", "tfclip")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_runs")
    for name in MODELS:
        checkpointed_workdir(str(root / name), name, num_classes=8, seed=1)
    return root


def _tracklet(frames: np.ndarray, track_id: int) -> sources.Tracklet:
    """A user's tracklet of these uint8 frames, stored losslessly (PNG)."""
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return sources.Tracklet(str(track_id), "c1", encoded, list(range(len(frames))), "test", [])


def _clips(frames: np.ndarray, t: int) -> np.ndarray:
    """A tracklet's consecutive t-frame clips, the last one its remaining frames repeated in order
    until full, as `export.json`'s aggregation describes them."""
    starts = range(0, len(frames), t)
    return np.stack([frames[s + np.arange(t) % min(t, len(frames) - s)] for s in starts])


def _calls(tm) -> list[tuple[tuple, list[np.ndarray]]]:
    """`[(inputs of one call of the exported function, the tracklets they hold)]` for random uint8
    tracklets of several lengths: NL3D takes one tracklet's clips a call, GLTR padded tracklets."""
    rng = np.random.default_rng(1)
    cfg = tm.config.input
    frames = lambda *shape: rng.integers(0, 256, (*shape, cfg.height, cfg.width, 3), np.uint8)
    if tm.config.model.name in CLIP_AVERAGE:
        tracklets = [frames(length) for length in NL3D_LENGTHS]
        return [((_clips(f, cfg.clip_len),), [f]) for f in tracklets]
    calls = []
    for b, length, lengths in GLTR_CASES:
        padded = frames(b, length)
        mask = np.arange(length)[None] < np.asarray(lengths)[:, None]
        calls.append(((padded, mask), [f[m] for f, m in zip(padded, mask, strict=True)]))
    return calls


def _tracklet_features(tm):
    """How the outputs of one call give its tracklets' features (`export.json`'s aggregation):
    NL3D pools its clips' features; GLTR's outputs are the tracklets' features."""
    if tm.config.model.name in CLIP_AVERAGE:
        pool = {"mean": np.mean, "max": np.max}[tm.config.eval.aggregate]
        return lambda out: pool(out, axis=0, keepdims=True)
    return lambda out: out


@pytest.fixture(scope="module", params=MODELS)
def exported(request, runs):
    """(feature function, [(inputs, expected tracklet features)], outputs -> tracklet features)
    for one model; the expected features are `vreid-extract`'s of the same tracklets."""
    tm = trained_model.load(str(runs / request.param))
    calls = _calls(tm)
    everything = [f for _, tracklets in calls for f in tracklets]
    extracted = extract.extract(
        tm, [_tracklet(f, i) for i, f in enumerate(everything)], progress=False
    )
    rows = iter(extracted.features)
    cases = [(inputs, np.stack([next(rows) for _ in tracklets])) for inputs, tracklets in calls]
    return export.feature_function(tm), cases, _tracklet_features(tm)


def _runner(fmt, ff, folder):
    names = [p.name for p in ff.inputs]
    if fmt == "stablehlo":
        with open(os.path.join(folder, "model.jax_export"), "rb") as f:
            exp = jax.export.deserialize(bytearray(f.read()))
        return lambda *inputs: np.asarray(exp.call(*inputs))
    if fmt == "savedmodel":
        import tensorflow as tf

        fn = tf.saved_model.load(os.path.join(folder, "saved_model")).signatures[export.SIGNATURE]
        return lambda *inputs: fn(**dict(zip(names, inputs, strict=True)))["features"].numpy()
    if fmt == "tflite":
        import tensorflow as tf

        runner = tf.lite.Interpreter(
            model_path=os.path.join(folder, "model.tflite")
        ).get_signature_runner(export.SIGNATURE)
        return lambda *inputs: runner(**dict(zip(names, inputs, strict=True)))["features"]
    import onnxruntime

    session = onnxruntime.InferenceSession(
        os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return lambda *inputs: session.run(None, dict(zip(names, inputs, strict=True)))[0]


# ONNX (our own converter) in the fast tier, every format in the full one.
@pytest.mark.parametrize(
    "fmt", [f if f == "onnx" else pytest.param(f, marks=pytest.mark.slow) for f in export.FORMATS]
)
def test_exported_features_equal_evaluation(fmt, exported, tmp_path):
    ff, cases, tracklet_features = exported
    if ff.provenance["model"] in CLIP_AVERAGE and fmt == "savedmodel":
        pytest.skip(
            "CI time: the model's TFLite test converts the same jax2tf module as its SavedModel."
        )
    export.EXPORTERS[fmt](ff, str(tmp_path))
    run = _runner(fmt, ff, str(tmp_path))
    for inputs, reference in cases:
        assert np.all(np.isfinite(reference)) and np.max(np.abs(reference)) > 1e-3
        out = run(*inputs)
        assert out.shape[0] == inputs[0].shape[0] and out.dtype == np.float32
        got = tracklet_features(out)
        assert got.shape == reference.shape
        rel = np.max(np.abs(got - reference)) / np.max(np.abs(reference))
        assert rel <= RTOL, (fmt, [x.shape for x in inputs], rel)


def test_tfclip_on_your_own_tracklets_takes_the_mean_camera_embedding(runs):
    """`vreid-extract` gives TF-CLIP no camera id (your cameras are not its training cameras): its
    features are those of a model whose every camera embedding is the mean of the trained table,
    and differ from any one training camera's; the features file says so."""
    tm = trained_model.load(str(runs / "tfclip"))
    cfg = tm.config.input
    frames = np.random.default_rng(2).integers(
        0, 256, (cfg.clip_len, cfg.height, cfg.width, 3), np.uint8
    )
    extracted = extract.extract(tm, [_tracklet(frames, 0)], progress=False)
    params = tm.variables["params"]
    table = params["camera"]["cv_embed"]
    every_row_the_mean = jnp.broadcast_to(table.mean(0), table.shape)
    mean_only = {**tm.variables, "params": {**params, "camera": {"cv_embed": every_row_the_mean}}}
    clips = jnp.asarray(frames[None])
    camera_0 = jnp.zeros((1,), jnp.int32)
    expected = features_lib.clip_features(tm.model, mean_only, clips, camera_0)
    np.testing.assert_allclose(extracted.features, expected, rtol=1e-5, atol=1e-6)
    of_camera_0 = features_lib.clip_features(tm.model, tm.variables, clips, camera_0)
    assert np.abs(extracted.features - of_camera_0).max() > 1e-4
    assert extracted.provenance["cameras"] == registry.UNKNOWN_CAMERAS


def test_cli_exports_with_metadata(runs, tmp_path):
    out = tmp_path / "onnx"
    # In this process; tests/test_use_a_trained_model.py runs the `vreid-export` console script.
    result = run_command(export, "--workdir", runs / "gltr", "--format", "onnx", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["export.json", "model.onnx"]
    meta = json.loads((out / "export.json").read_text())
    assert meta["format"] == "onnx" and meta["provenance"]["step"] == 1
    assert [p["shape"] for p in meta["inputs"]] == [["B", "L", 64, 32, 3], ["B", "L"]]
    assert meta["outputs"][0]["shape"][0] == "B" and "mask" in meta["aggregation"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary folder left


def test_unknown_format_is_one_line(tmp_path):
    result = run_command(
        export, "--workdir", tmp_path, "--format", "pickle", "--out", tmp_path / "out"
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "error: --format='pickle'; expected one of stablehlo, savedmodel, tflite, onnx."
    )


def test_user_errors(runs, tmp_path):
    with pytest.raises(errors.UserError, match="--format"):
        export.export(str(runs / "gltr"), "keras", str(tmp_path / "a"))
    empty = tmp_path / "untrained"
    empty.mkdir()
    (empty / "config.json").write_text(tiny_config("gltr").to_json())
    with pytest.raises(errors.UserError, match="no checkpoints folder"):
        export.export(str(empty), "onnx", str(tmp_path / "b"))
    with pytest.raises(errors.UserError, match="does not exist"):
        export.export(str(tmp_path / "nowhere"), "onnx", str(tmp_path / "c"))
    assert sorted(os.listdir(tmp_path)) == ["untrained"]  # nothing written
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(errors.UserError, match="exists and is not empty"):
        export.export(str(runs / "gltr"), "onnx", str(full))
    assert os.listdir(full) == ["keep.txt"]


# ----------------------------------------------------------------------------- ONNX primitives


def _onnx_equals_jax(fn, *arrays, symbolic=None):
    """Converts `fn` with the leading axis of every input symbolic ('B') unless `symbolic` gives
    the jax polymorphic shapes, runs it with onnxruntime and compares with jax."""
    import onnxruntime

    symbolic = symbolic or ["(B, " + ", ".join(["_"] * (a.ndim - 1)) + ")" for a in arrays]
    specs = jax.export.symbolic_args_specs(arrays, symbolic)
    names = [f"x{i}" for i in range(len(arrays))]
    model = onnx_writer.convert(fn, specs, names, "y")
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = session.run(None, dict(zip(names, arrays, strict=True)))[0]
    want = np.asarray(fn(*arrays))
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(3, 6, 5, 4)).astype(np.float32)
_KERNEL = _RNG.normal(size=(3, 3, 4, 6)).astype(np.float32)

PRIMITIVES = {
    "conv_strided_padded": lambda x: jax.lax.conv_general_dilated(
        x, _KERNEL, (2, 1), ((1, 1), (2, 0)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    ),
    "conv_dilated_grouped": lambda x: jax.lax.conv_general_dilated(
        x,
        _KERNEL[:, :, :2],
        (1, 1),
        "SAME",
        rhs_dilation=(2, 1),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=2,
    ),
    "dot_general_batched": lambda x: jnp.einsum("bhwc,bgwc->bhg", x, x * 2.0),
    "dense": lambda x: x @ _KERNEL[0, 0],
    "broadcast_reduce": lambda x: (
        jnp.sum(x, axis=(1, 2)) / jnp.max(x, axis=(1, 2)).min(-1)[:, None]
    ),
    "reshape_symbolic": lambda x: x.reshape(-1, 4).T.reshape(4, x.shape[0], -1).sum(-1),
    # (jnp indexing would be a gather under a symbolic batch: the models use lax.slice.)
    "pad_slice_concat": lambda x: jnp.concatenate(
        [
            jax.lax.slice(
                jnp.pad(x, ((0, 0), (2, 1), (0, 0), (0, 0)), constant_values=-jnp.inf),
                (0, 1, 0, 0),
                (x.shape[0], 8, 5, 4),
                (1, 3, 2, 1),
            ),
            jax.lax.slice(x, (0, 0, 0, 0), (x.shape[0], 3, 5, 4), (1, 1, 2, 1)),
        ],
        1,
    ),
    "split": lambda x: jnp.concatenate(jnp.split(x, [1, 3], axis=-1)[::-1], -1),
    "select_compare": lambda x: jnp.where(x > 0.1, x, -x) + (x >= 0) - (x < 1) * (x != 0),
    "unary": lambda x: jnp.exp(-jnp.abs(x)) + jax.lax.rsqrt(x * x + 1) + jnp.sqrt(x**2) + x**3,
    "softmax_relu_cast": lambda x: jax.nn.softmax(jax.nn.relu(x), -1) + x.astype(jnp.int32),
    "max_min_clip": lambda x: jnp.clip(jnp.maximum(x, 0.2), -0.5, 0.5) + jnp.minimum(x, 0.0),
}


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_onnx_primitives_match_jax(name):
    _onnx_equals_jax(PRIMITIVES[name], _X)


def test_onnx_two_symbolic_dims_and_bool_mask():
    frames = _RNG.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    mask = np.arange(5)[None] < np.array([[5], [2]])

    def fn(frames, mask):
        x = frames.astype(jnp.float32).reshape(frames.shape[0] * frames.shape[1], -1)
        x = x.reshape(frames.shape[0], frames.shape[1], -1).mean(-1)
        return jnp.where(mask, x, 0.0).sum(1) / jnp.maximum(mask.sum(1), 1)

    _onnx_equals_jax(fn, frames, mask, symbolic=["(B, L, 4, 3)", "(B, L)"])


def test_onnx_unsupported_primitive_is_named():
    specs = [jax.ShapeDtypeStruct((4,), np.float32)]
    with pytest.raises(errors.UserError, match="primitive 'cumsum'"):
        onnx_writer.convert(jnp.cumsum, specs, ["x"], "y")
