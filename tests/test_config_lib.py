"""Config helpers: the `:arg` suffix, epochs to steps, and `validate`, the one check of a config."""

import glob
import importlib
import os
import subprocess
import sys

import pytest
from helpers import tiny_config

from vreid_jax import config_lib, errors

# Every key of configs/default.py whose value is one of a few names, with a wrong value for it.
BAD_CHOICES = [
    ("mode", "fly"),
    ("data.name", "market1501"),
    ("input.resize", "nearest"),
    ("input.epoch", "bogus"),
    ("input.train_sampler", "dense"),
    ("model.name", "c3d"),
    ("model.depth", 35),
    ("model.last_stride", 3),
    ("model.dtype", "float16"),
    ("model.fast_cpu_ops", "yes"),
    ("model.max_pool_ties", "last"),
    ("model.temporal_padding", "reflect"),
    ("model.temporal_init", "zeros"),
    ("model.tfclip.neck_feat", "middle"),
    ("loss.triplet_distance", "manhattan"),
    ("optim.name", "lamb"),
    ("schedule.name", "cosine"),
    ("eval.aggregate", "median"),
    ("eval.distance", "manhattan"),
    ("eval.gallery", "both"),
    ("eval.ap_mode", "interpolated"),
    ("keep_host_memory", "sometimes"),
]
# The string keys that are not choices: paths, a checkpoint name or folder, an address.
FREE_FORM_KEYS = (
    "data.data_dir",
    "model.pretrained",
    "eval.checkpoint",
    "mesh.coordinator_address",
)


def test_parse_arg_types_and_errors():
    args = config_lib.parse_arg("model=gltr,split=3,quick", model="nl3d", split=0, quick=False)
    assert (args.model, args.split, args.quick) == ("gltr", 3, True)
    with pytest.raises(ValueError, match="Unknown config argument 'modle'"):
        config_lib.parse_arg("modle=gltr", model="nl3d")
    with pytest.raises(ValueError, match="not a int"):
        config_lib.parse_arg("split=x", split=0)


@pytest.mark.parametrize(("key", "value"), BAD_CHOICES, ids=[k for k, _ in BAD_CHOICES])
def test_a_wrong_choice_is_one_line_naming_key_value_and_choices(key, value):
    config = tiny_config("nl3d", **{key: value})
    with pytest.raises(errors.UserError) as error:
        config_lib.validate(config)
    message = str(error.value)
    assert message.startswith(f"config.{key}={value!r}") and "\n" not in message
    section, _, leaf = key.rpartition(".")
    default = tiny_config("nl3d")[section][leaf] if section else tiny_config("nl3d")[leaf]
    assert str(default) in message  # The allowed values are listed.


def test_every_choice_key_of_the_default_config_is_tested():
    """Every string key of configs/default.py but the free-form ones is a choice, as are the two
    int choices: a key added there joins BAD_CHOICES (and `validate`)."""
    from configs import default  # noqa: PLC0415

    def flat(config, prefix=""):
        for key, value in config.items():
            if hasattr(value, "items"):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    strings = {key for key, value in flat(default.get_config()) if isinstance(value, str)}
    choices = strings - set(FREE_FORM_KEYS) | {"model.depth", "model.last_stride"}
    assert choices == {key for key, _ in BAD_CHOICES}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"log_every_steps": 0}, "config.log_every_steps must be positive"),
        ({"eval.max_rank": 0}, "config.eval.max_rank must be positive"),
        ({"preflight.input_seconds": 0.0}, "config.preflight.input_seconds must be positive"),
        ({"input.num_instances": 1}, "at least 2 clips per identity"),
        ({"input.window": 4, "input.clip_len": 8}, "config.input.window=4 is shorter"),
        ({"input.pad": -1}, "config.input.pad=-1"),
        ({"input.random_erasing": 1.5}, "config.input.random_erasing=1.5"),
        ({"eval.checkpoint": ""}, "config.eval.checkpoint is empty"),
        ({"num_epochs": 0, "num_train_steps": -1}, "config.num_epochs > 0"),
        ({"eval.splits": (0, 1)}, r"config.eval.splits=\(0, 1\): only the 10-split"),
        ({"data.name": "ilidsvid", "data.split": 10}, "config.data.split=10: the published"),
        ({"data.name": "prid2011", "eval.splits": (9, 10)}, r"config.eval.splits=\(9, 10\)"),
        ({"schedule.warmup_epochs": -1.0}, "config.schedule.warmup_epochs"),
        ({"schedule.decay_epochs": 0.0}, "config.schedule.decay_epochs"),
        (
            {"schedule.name": "multistep", "schedule.milestones_epochs": (5, 3)},
            "config.schedule.milestones_epochs",
        ),
        (
            {"schedule.name": "multistep", "schedule.warmup_epochs": 100.0},
            r"config.schedule.milestones_epochs=\(60, 120, 180\) must be increasing and after",
        ),
        ({"model.temporal_kernel": 2}, "config.model.temporal_kernel"),
        ({"model.stage_sizes": (1, 1, 1)}, "config.model.stage_sizes"),
        ({"model.tfclip.heads": 5}, "config.model.tfclip.width=768 is not a multiple"),
        ({"model.tfclip.output_dim": 100}, "config.model.tfclip.output_dim=100 must be a multiple"),
        ({"model.tfclip.num_cameras": 0}, "config.model.tfclip.num_cameras=0 must be a positive"),
        ({"model.tfclip.ssp_dropout": 1.0}, "config.model.tfclip.ssp_dropout=1.0"),
    ],
)
def test_other_rules_name_the_key(overrides, message):
    config = tiny_config("nl3d", **overrides)
    with pytest.raises(errors.UserError, match=message):
        config_lib.validate(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim.name": "sgd"}, "config.optim.name='sgd': TF-CLIP trains with its own Adam"),
        ({"schedule.name": "exponential"}, "set config.schedule.name='multistep'"),
        ({"loss.triplet_distance": "cosine"}, "set config.loss.triplet_distance='euclidean'"),
        ({"schedule.warmup_epochs": 0.5}, "TF-CLIP's warm-up counts whole epochs"),
    ],
)
def test_tfclip_training_rules_name_the_key(overrides, message):
    config_lib.validate(tiny_config("tfclip"))
    with pytest.raises(errors.UserError, match=message):
        config_lib.validate(tiny_config("tfclip", **overrides))


def test_every_shipped_config_is_valid(repo_root):
    for path in sorted(glob.glob(os.path.join(repo_root, "configs", "*.py"))):
        name = os.path.basename(path)[:-3]
        if name not in ("__init__", "recipe"):
            config_lib.validate(importlib.import_module(f"configs.{name}").get_config())
    demo = importlib.import_module("configs.demo")
    for model in ("gltr", "tfclip"):  # The demo's other models (TF-CLIP's training is checked).
        config_lib.validate(demo.get_config(f"model={model}"))


def test_validation_imports_neither_jax_nor_tensorflow(repo_root):
    """Configs import config_lib, and the CLI validates before JAX starts: both stay cheap."""
    code = (
        "import sys; from vreid_jax import config_lib; from configs import default; "
        "config_lib.validate(default.get_config()); "
        "print(sorted(m for m in ('jax', 'tensorflow', 'flax', 'optax') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_the_cli_names_a_wrong_choice_before_reading_any_data(repo_root, tmp_path, monkeypatch):
    """`vreid_jax.main.main` in this process, its flags parsed as the command line's: a mistyped
    value ends the command with one `error:` line before the data is looked for (the same command
    with a valid config fails on the missing dataset)."""
    from absl import flags  # noqa: PLC0415
    from ml_collections import config_flags  # noqa: PLC0415

    from vreid_jax import cli  # noqa: PLC0415
    from vreid_jax import main as main_module  # noqa: PLC0415

    def run(*overrides):
        argv = [
            "vreid-train",
            f"--config={repo_root / 'configs' / 'tiny.py'}",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.data_dir={tmp_path / 'no_data'}",
            "--config.data.synthetic.enabled=false",
            *overrides,
        ]
        parsed = flags.FlagValues()  # Not absl's global FLAGS: no flag is defined for good.
        config_flags.DEFINE_config_file(
            "config", None, "", flag_values=parsed, lock_config=True, sys_argv=argv
        )
        flags.DEFINE_string("workdir", None, "", flag_values=parsed)
        parsed(argv)
        monkeypatch.setattr(main_module, "FLAGS", parsed)
        with pytest.raises(SystemExit) as exit_:
            cli._one_line_errors(main_module.main)(["vreid-train"])
        return str(exit_.value.code)

    message = run("--config.eval.distance=manhattan")
    assert message == (
        "error: config.eval.distance='manhattan'; expected one of ('euclidean', 'cosine')."
    )
    assert not (tmp_path / "no_data").exists() and not (tmp_path / "run").exists()
    assert "No built 'mars' dataset" in run()
