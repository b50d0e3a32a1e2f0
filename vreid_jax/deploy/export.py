r"""Exports a trained model's feature function for use outside this codebase.

  vreid-export --workdir RUN [--checkpoint latest|best|STEP_FOLDER] \
      --format stablehlo|savedmodel|tflite|onnx --out DIR [--overwrite]

The exported function takes uint8 RGB pixels (normalised inside, `vreid_jax.data.pixels`) and
returns float32 features, computed as the run's evaluation computes them (`vreid_jax.evaluation.features`):

- FRAME_SEQUENCE models (GLTR): `frames` uint8 `[B, L, H, W, 3]` and `mask` bool `[B, L]` (True =
  real frame; padded frames at the end of a tracklet are False) -> tracklet features `[B, D]`. The
  batch B and the length L are symbolic, H and W are the checkpoint's frame size.
- CLIP_AVERAGE models (NL3D): `clips` uint8 `[B, T, H, W, 3]` -> clip features `[B, D]`, B symbolic,
  T the checkpoint's clip length. A tracklet's feature is the mean (or max, `config.eval.aggregate`)
  of the features of its consecutive T-frame clips, the last one filled by repeating its remaining
  frames (`export.json` says so).

Every format computes in float32 whatever `config.model.dtype` the run trained with. Next to the
model files, `export.json` records the signature, the pixel convention, the aggregation rule and
where the weights came from. The output folder is written under a temporary name and renamed when
complete, so an interrupted export leaves nothing behind.

Formats:
  stablehlo   `model.jax_export`: a serialized `jax.export.Exported` (weights inside, lowered for
              CPU, CUDA and TPU); `jax.export.deserialize(bytes).call(...)`.
  savedmodel  `saved_model/`: TensorFlow SavedModel (jax2tf; weights as variables), signature
              `serving_default`, symbolic B and L.
  tflite      `model.tflite`: TensorFlow Lite flatbuffer (builtin ops only), symbolic B and L;
              call it through its `serving_default` signature runner.
  onnx        `model.onnx`: ONNX (opset `onnx_writer.OPSET`) with symbolic B and L, converted from
              the function's jaxpr by `vreid_jax.deploy.onnx_writer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from absl import flags

from vreid_jax import cli, errors, files

if TYPE_CHECKING:  # Imported when exporting: the command starts without jax.
    from vreid_jax.evaluation.features import Port

FORMATS = ("stablehlo", "savedmodel", "tflite", "onnx")
METADATA_FILE = "export.json"
# Where each format's model lives inside the output folder.
MODEL_FILES = {
    "stablehlo": "model.jax_export",
    "savedmodel": "saved_model",
    "tflite": "model.tflite",
    "onnx": "model.onnx",
}
# The platforms a `stablehlo` export is lowered for (it runs on any of them).
STABLEHLO_PLATFORMS = ("cpu", "cuda", "tpu")
# The serving signature's name in a SavedModel.
SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class FeatureFunction:
    """A trained model's feature function, ready to export.

    Attributes:
      apply: `apply(variables, *inputs) -> features`, a pure JAX function.
      variables: host numpy `{'params', 'batch_stats'}`.
      inputs: the inputs' names, shapes (symbolic dimensions as names) and dtypes.
      output: the output feature.
      aggregation: how a tracklet's feature follows from the outputs (for `export.json`).
      provenance: the checkpoint's record (`trained_model.TrainedModel.provenance`).
    """

    apply: Callable
    variables: dict
    inputs: tuple[Port, ...]
    output: Port
    aggregation: str
    provenance: dict

    def closed(self) -> Callable:
        """`fn(*inputs) -> features` with the variables baked in as constants."""
        variables = self.variables
        return lambda *inputs: self.apply(variables, *inputs)

    def specs(self):
        """The inputs as `jax.ShapeDtypeStruct`s, their symbolic dimensions in one scope."""
        import jax  # noqa: PLC0415
        import numpy as np  # noqa: PLC0415

        shapes = [jax.ShapeDtypeStruct(p.shape, np.dtype(p.dtype)) for p in self.inputs]
        return tuple(
            jax.export.symbolic_args_specs(shapes, [self.shape_spec(p) for p in self.inputs])
        )

    @staticmethod
    def shape_spec(port: Port) -> str:
        """A port's shape in jax's polymorphic-shape syntax, e.g. '(B, L, 64, 32, 3)'."""
        return "(" + ", ".join(str(d) for d in port.shape) + ")"


def feature_function(trained) -> FeatureFunction:
    """The feature function of a `trained_model.TrainedModel` as its evaluation computes it."""
    import jax  # noqa: PLC0415
    import ml_collections  # noqa: PLC0415

    from vreid_jax import models
    from vreid_jax.evaluation import features  # noqa: PLC0415

    config = trained.config
    # Exports compute in float32 (the parameters are), with the CPU forms of conv and max-pool:
    # matrix products, slices and maxima, which every format takes (TFLite and the ONNX converter
    # refuse XLA's reduce-window pool).
    model_config = ml_collections.ConfigDict(config.model.to_dict())
    model_config.update(dtype="float32", fast_cpu_ops="true")
    model = models.build_model(model_config, trained.meta["num_classes"])
    variables = jax.device_get(trained.variables)
    signature = features.kind_for(config.model.name).signature(model, config)
    apply, inputs = signature.apply, signature.inputs
    dim = jax.eval_shape(apply, variables, *_concrete(inputs)).shape[-1]
    output = features.Port(
        "features", ("B", dim), "float32", "float32 features, one row per batch item"
    )
    return FeatureFunction(
        apply, variables, inputs, output, signature.aggregation, trained.provenance()
    )


def _concrete(ports, size: int = 1):
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    return tuple(
        jax.ShapeDtypeStruct(
            tuple(size if isinstance(d, str) else d for d in p.shape), np.dtype(p.dtype)
        )
        for p in ports
    )


# ----------------------------------------------------------------------------- formats


def export_stablehlo(ff: FeatureFunction, out: str, **_) -> dict:
    """`model.jax_export`: the serialized `jax.export.Exported`, weights baked in."""
    import jax  # noqa: PLC0415

    exported = jax.export.export(jax.jit(ff.closed()), platforms=STABLEHLO_PLATFORMS)(*ff.specs())
    with open(os.path.join(out, MODEL_FILES["stablehlo"]), "wb") as f:
        f.write(exported.serialize())
    return {
        "platforms": list(exported.platforms),
        "weights": "constants inside the module",
        "load": (
            "exp = jax.export.deserialize(bytearray(open('model.jax_export', 'rb').read())); "
            f"features = exp.call({', '.join(p.name for p in ff.inputs)})"
        ),
    }


def _tf_module(ff: FeatureFunction):
    """A `tf.Module` whose `features` tf.function runs the jax2tf-converted function (symbolic B
    and L: the signature's dimensions are None), its weights held as tf.Variables."""
    import jax  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415
    from jax.experimental import jax2tf  # noqa: PLC0415

    converted = jax2tf.convert(
        ff.apply,
        polymorphic_shapes=[None] + [ff.shape_spec(p) for p in ff.inputs],
        with_gradient=False,
        native_serialization_platforms=STABLEHLO_PLATFORMS,
    )
    module = tf.Module()
    module.variables_tree = jax.tree.map(tf.Variable, ff.variables)
    signature = [
        tf.TensorSpec(
            [None if isinstance(d, str) else d for d in p.shape],
            tf.as_dtype(p.dtype),
            name=p.name,
        )
        for p in ff.inputs
    ]

    @tf.function(autograph=False, input_signature=signature)
    def features(*inputs):
        return {ff.output.name: converted(module.variables_tree, *inputs)}

    module.features = features
    return module


def export_savedmodel(ff: FeatureFunction, out: str, **_) -> dict:
    """`saved_model/`: a TensorFlow SavedModel with a `serving_default` signature."""
    import tensorflow as tf  # noqa: PLC0415

    module = _tf_module(ff)
    path = os.path.join(out, MODEL_FILES["savedmodel"])
    tf.saved_model.save(
        module, path, signatures={SIGNATURE: module.features.get_concrete_function()}
    )
    args = ", ".join(f"{p.name}={p.name}" for p in ff.inputs)
    return {
        "signature": SIGNATURE,
        "platforms": list(STABLEHLO_PLATFORMS),
        "weights": "variables of the SavedModel",
        "load": (
            "sm = tf.saved_model.load('saved_model'); "
            f"features = sm.signatures['{SIGNATURE}']({args})['{ff.output.name}']"
        ),
    }


def export_tflite(ff: FeatureFunction, out: str, **_) -> dict:
    """`model.tflite`: TensorFlow Lite builtin ops only (the converter legalises the StableHLO
    that jax2tf emits), weights frozen in, symbolic B and L kept."""
    import tensorflow as tf  # noqa: PLC0415

    module = _tf_module(ff)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.features.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # noqa: BLE001  (the converter raises its own error types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise errors.UserError(
            f"TensorFlow Lite cannot convert this model ({type(e).__name__}: {first})."
        ) from e
    with open(os.path.join(out, MODEL_FILES["tflite"]), "wb") as f:
        f.write(flatbuffer)
    args = ", ".join(f"{p.name}={p.name}" for p in ff.inputs)
    return {
        "signature": SIGNATURE,
        "weights": "constants in the flatbuffer",
        "load": (
            "runner = tf.lite.Interpreter(model_path='model.tflite').get_signature_runner(); "
            f"features = runner({args})['{ff.output.name}']"
        ),
    }


def export_onnx(ff: FeatureFunction, out: str, **_) -> dict:
    """`model.onnx`: converted from the function's jaxpr (`vreid_jax.deploy.onnx_writer`)."""
    from vreid_jax.deploy import onnx_writer  # noqa: PLC0415  (onnx is an optional dependency)

    return onnx_writer.export_onnx(ff, os.path.join(out, MODEL_FILES["onnx"]))


EXPORTERS = {
    "stablehlo": export_stablehlo,
    "savedmodel": export_savedmodel,
    "tflite": export_tflite,
    "onnx": export_onnx,
}


# ----------------------------------------------------------------------------- driver


def export(
    workdir: str,
    fmt: str,
    out: str,
    checkpoint: str = "latest",
    overwrite: bool = False,
    **options,
) -> dict:
    """Exports the `checkpoint` of the run in `workdir` as `fmt` into the folder `out`; returns the
    metadata written to `out/export.json`.

    Raises:
      UserError: an unknown format, an `out` folder that exists and is not empty (without
        `overwrite`), no such run or checkpoint.
    """
    if fmt not in FORMATS:
        raise errors.UserError(f"--format={fmt!r}; expected one of {', '.join(FORMATS)}.")
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise errors.UserError(f"--out {out} exists and is not a folder.")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise errors.UserError(
            f"--out {out} exists and is not empty: choose another folder, or pass --overwrite."
        )
    import jax  # noqa: PLC0415

    from vreid_jax.deploy import trained_model  # noqa: PLC0415

    trained = trained_model.load(workdir, checkpoint)
    ff = feature_function(trained)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=parent)
    try:
        start = time.perf_counter()
        details = EXPORTERS[fmt](ff, tmp, **options)
        metadata = {
            "format": fmt,
            "file": MODEL_FILES[fmt],
            "inputs": [p.record() for p in ff.inputs],
            "outputs": [ff.output.record()],
            "pixels": (
                "uint8 RGB in [0, 255], normalised inside: (x / 255 - mean) / std with the "
                "ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)"
            ),
            "aggregation": ff.aggregation,
            "compute_dtype": "float32",
            **details,
            "provenance": ff.provenance,
            "versions": _versions(fmt),
            "export_seconds": round(time.perf_counter() - start, 2),
            "jax_version": jax.__version__,
        }
        files.write_json_atomic(os.path.join(tmp, METADATA_FILE), metadata)
        os.chmod(tmp, 0o755)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metadata


def _versions(fmt: str) -> dict:
    import importlib.metadata  # noqa: PLC0415

    names = {
        "stablehlo": ("jax", "jaxlib"),
        "savedmodel": ("jax", "tensorflow-cpu"),
        "tflite": ("jax", "tensorflow-cpu"),
        "onnx": ("jax", "onnx"),
    }[fmt]
    versions = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def _replace_folder(new: str, out: str) -> None:
    """Renames the complete folder `new` to `out`, replacing an existing `out`."""
    if not os.path.exists(out):
        os.rename(new, out)
        return
    old = tempfile.mkdtemp(
        prefix=f".{os.path.basename(out)}.", suffix=".old", dir=os.path.dirname(out)
    )
    os.rename(out, os.path.join(old, "previous"))
    os.rename(new, out)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module claims no global flag names.
    flags.DEFINE_string("workdir", None, "The training run's workdir.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a checkpoint step folder.")
    flags.DEFINE_string("format", None, f"One of {', '.join(FORMATS)}.")
    flags.DEFINE_string("out", None, "Output folder (created; must not exist or be empty).")
    flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out folder.")
    flags.mark_flags_as_required(["workdir", "format", "out"])


def main(argv):
    cli.no_arguments(argv)
    # Only the SavedModel and TFLite formats import TensorFlow.
    cli.start(tensorflow=FLAGS.format in ("savedmodel", "tflite"))
    metadata = export(
        FLAGS.workdir,
        FLAGS.format,
        FLAGS.out,
        checkpoint=FLAGS.checkpoint,
        overwrite=FLAGS.overwrite,
    )
    shapes = "; ".join(f"{p['name']} {p['dtype']}{p['shape']}" for p in metadata["inputs"])
    print(
        f"Exported {metadata['provenance']['model']} step {metadata['provenance']['step']} as "
        f"{FLAGS.format} to {os.path.abspath(FLAGS.out)} in {metadata['export_seconds']} s "
        f"({shapes} -> features {metadata['outputs'][0]['shape']})."
    )


def cli_main():
    """The `vreid-export` console script."""
    cli.launch(main, _define_flags)


if __name__ == "__main__":
    cli_main()
