"""mode=preflight: every recipe compiles, sizes and times at reduced size; the verdict recommends
overrides that fit; the command line writes preflight.json and prints the verdict.

Every run here has the shapes of the reduced-size MARS recipes (the other datasets' classifier
sizes are set to MARS's). At reduced size the five recipes of a model differ only in their
dataset, so the jitted train step, the evaluation functions and the initial state are shared
between runs whose model, loss, optimizer, input and evaluation settings are equal
(`shared_compiles`): tracing a ResNet train step costs seconds, and would otherwise be paid ten
times for two distinct steps.
"""

import importlib
import json
import subprocess
import sys

import jax
import pytest

from configs import tiny
from data_prep import names
from vreid_jax import config_lib, hardware, parallel, run
from vreid_jax.data import throughput
from vreid_jax.errors import UserError
from vreid_jax.evaluation import features
from vreid_jax.training import loop, preflight
from vreid_jax.training import state as state_lib

# 4 global clips over the 4 fake devices.
SIZE_KEYS = {
    **tiny.RECIPE_SIZE_KEYS,
    "preflight.timed_steps": 1,
    "preflight.input_seconds": 0.2,
}


def _recipe_config(name, **overrides):
    config = importlib.import_module(f"configs.{name}").get_config()
    config.update_from_flattened_dict({**SIZE_KEYS, **overrides})
    return config


@pytest.fixture
def mars_sized(monkeypatch):
    """Every dataset with MARS's training identities: one classifier shape for all recipes."""
    monkeypatch.setattr(names, "TRAIN_IDS", dict.fromkeys(names.NAMES, names.TRAIN_IDS["mars"]))


_SHARED = {}  # (what, settings) -> jitted step, extractor or host copy of the initial state.


def _settings(config, model) -> str:
    sections = ("model", "loss", "optim", "schedule", "input", "eval")
    return json.dumps(
        [config.seed, model.num_classes, *(config[k].to_dict() for k in sections)],
        sort_keys=True,
        default=str,
    )


@pytest.fixture
def shared_compiles(monkeypatch):
    """The preflight's jitted train step, evaluation extractor and initial state, shared between
    runs with equal settings (see the module docstring); the preflight itself runs unchanged."""
    compile_train_step, extractor_for = loop.compile_train_step, features.extractor_for
    create_train_state = state_lib.create_train_state

    def shared(what, key, make):
        if (what, key) not in _SHARED:
            _SHARED[what, key] = make()
        return _SHARED[what, key]

    def shared_step(model, tx, lr_fn, config, shardings, mesh):
        make = lambda: compile_train_step(model, tx, lr_fn, config, shardings, mesh)
        return shared("step", _settings(config, model), make)

    def shared_extractor(model, config, mesh):
        return shared("eval", _settings(config, model), lambda: extractor_for(model, config, mesh))

    def shared_state(model, tx, init_input, *, seed, mesh):
        key = (seed, repr(model), init_input.shape)

        def make():
            state, shardings = create_train_state(model, tx, init_input, seed=seed, mesh=mesh)
            return jax.device_get(state), shardings

        host_state, shardings = shared("state", key, make)
        return jax.device_put(host_state, shardings), shardings  # The step donates its state.

    monkeypatch.setattr(loop, "compile_train_step", shared_step)
    monkeypatch.setattr(features, "extractor_for", shared_extractor)
    monkeypatch.setattr(state_lib, "create_train_state", shared_state)


def _apply(config, changes):
    """`config` with the `--config.key=value` overrides of a verdict applied (each must be a key)."""
    config = config.copy_and_resolve_references()
    for change in changes:
        assert change.startswith("--config."), change
        key, value = change.removeprefix("--config.").split("=")
        *sections, leaf = key.split(".")
        parent = config
        for section in sections:
            parent = parent[section]
        parent[leaf] = type(parent[leaf])(value)
    config_lib.validate(config)
    return config


@pytest.mark.slow  # Every recipe: the full tier (the fast one preflights in the tests below).
@pytest.mark.parametrize("model", ["nl3d", "gltr"])
def test_every_recipe_preflights_at_reduced_size(model, mars_sized, shared_compiles, tmp_path):
    # One test per model, its five recipes in turn: they share one compiled step (one worker).
    for dataset in names.NAMES:
        _check_recipe(model, dataset, tmp_path / dataset)


@pytest.mark.slow
def test_tfclip_recipe_preflights_with_its_memory_pass(mars_sized, tmp_path):
    _check_recipe("tfclip", "mars", tmp_path)


def _check_recipe(model, dataset, workdir):
    name = f"{model}_{dataset}"
    record = run.run(_recipe_config(name, **{"mode": "preflight"}), str(workdir))
    assert record == json.loads((workdir / "preflight.json").read_text()), name
    assert (record["recipe"]["model"], record["recipe"]["dataset"]) == (model, dataset)
    assert record["recipe"]["global_batch_clips"] == 4
    assert record["devices"] == {
        "platform": "cpu",
        "device_kind": "cpu",
        "count": 4,
        "processes": 1,
    }
    memory = record["memory"]
    expected_eval = {
        "nl3d": {"clip_features"},
        "gltr": {"frame_features", "sequence_features"},
        # TF-CLIP's CLIP-Memory pass before the first step: every training frame, no camera.
        "tfclip": {"clip_features", "clip_memory"},
    }
    assert set(memory["eval"]) == expected_eval[model]
    for entry in (memory["train_step"], *memory["eval"].values()):
        assert entry["total"] > 0 and entry["arguments"] > 0 and entry["fits"], name
    assert "host RAM" in memory["capacity_source"] and memory["capacity_bytes"] > 0
    # On this CPU (glibc, keep_host_memory 'auto') the step needs room for a second step's
    # allocations; the process's peak RSS after the steps is recorded next to the prediction.
    step = memory["train_step"]
    assert step["heap_copies"] == 2
    assert step["needed"] == step["total"] + step["step_allocations"] > step["total"]
    host = memory["host"]
    assert host["predicted_peak_rss"] == host["predicted_peak_rss_timed"]
    assert host["predicted_peak_rss"] == host["rss_before_steps"] + 4 * step["needed"]
    assert host["measured_peak_rss"] >= host["compile_peak_rss"] > 0
    assert host["peak_rss_at_end"] >= host["measured_peak_rss"]
    assert memory["fits"] and memory["max_num_ids_per_batch"] == 2
    assert record["flops_per_step"] > 0 and record["step_time_s"] > 0, name
    assert not record["step_time_extrapolated"]
    assert record["input_clips_per_s"] > 0 and record["clips_per_s_consumed"] > 0, name
    expected_format = "png" if dataset in ("ilidsvid", "prid2011") else "jpeg"
    assert record["input_image_format"] == expected_format
    assert record["verdict"].startswith(("OK", "input-bound")), record["verdict"]
    assert record["seconds"] > 0


@pytest.mark.slow  # Two preflights of several batch sizes: the full tier.
def test_verdicts_input_bound_then_does_not_fit(mars_sized, shared_compiles, monkeypatch, workdir):
    # A pipeline far slower than any step, with settings the verdict can raise.
    slow = {"clips_per_s": 1e-3, "clips_per_cpu_s": 1e-3, "seconds": 0.1, "image_format": "jpeg"}
    monkeypatch.setattr(throughput, "train_clips_per_s", lambda *a, **k: slow)
    config = _recipe_config(
        "gltr_mars",
        **{
            "mode": "preflight",
            "input.num_ids_per_batch": 4,
            "input.num_parallel_calls": 2,
            "input.threadpool_size": 1,
        },
    )
    record = run.run(config, str(workdir / "input"))
    assert record["memory"]["fits"] and record["input_bound"]
    assert record["verdict"].startswith("input-bound: the pipeline gives 0.0 clips/s")
    assert record["changes"] == [
        "--config.input.num_parallel_calls=-1",
        "--config.input.threadpool_size=0",
    ]
    _apply(config, record["changes"])

    # Capacity one byte short of the configured step: P=4 does not fit, P=2 (4 clips, one per
    # device) does, and the memory line finds it.
    needed = record["memory"]["train_step"]["needed"]
    monkeypatch.setattr(hardware, "memory_capacity", lambda *a: (needed - 1, "test capacity"))
    record = run.run(config, str(workdir / "fit"))
    memory = record["memory"]
    assert not memory["fits"] and not memory["train_step"]["fits"]
    assert memory["max_num_ids_per_batch"] == 2
    assert memory["train_step"]["at_max_num_ids_per_batch"]["needed"] <= needed - 1
    assert memory["host"]["timed_num_ids_per_batch"] == 2
    assert memory["host"]["predicted_peak_rss_timed"] < memory["host"]["predicted_peak_rss"]
    assert record["step_time_extrapolated"] and record["timed_num_ids_per_batch"] == 2
    assert record["step_time_s"] > 0
    assert record["verdict"].startswith("does not fit: the train step needs")
    assert "--config.input.num_ids_per_batch=2 (fits with" in record["verdict"]
    assert record["changes"][0] == "--config.input.num_ids_per_batch=2"
    assert "--config.model.dtype=bfloat16" not in record["changes"]  # Not offered on a CPU.
    assert "--config.keep_host_memory=false" in record["changes"]  # The compiled total fits.
    _apply(config, record["changes"])


def test_a_step_predicted_not_to_fit_is_reported_and_never_run(
    mars_sized, shared_compiles, monkeypatch, workdir
):
    # The smallest valid P (2) with less host RAM than its prediction: nothing may be executed.
    def must_not_run(*args, **kwargs):
        raise AssertionError("a step predicted not to fit was executed")

    monkeypatch.setattr(preflight, "time_steps", must_not_run)
    monkeypatch.setattr(state_lib, "create_train_state", must_not_run)
    compiled_total = {}

    def capacity(device, num_devices):
        # Between the compiled total and the prediction with the kept heap's second copy: the
        # CPU allowance alone decides. (Read after the compile, which `compiled_total` recorded.)
        step = compiled_total["entry"]
        return (step["total"] + step["needed"]) // 2, "test capacity"

    compile_step = preflight._compile_step

    def recording_compile(*args):
        compiled, entry = compile_step(*args)
        compiled_total["entry"] = entry
        return compiled, entry

    monkeypatch.setattr(preflight, "_compile_step", recording_compile)
    monkeypatch.setattr(hardware, "memory_capacity", capacity)
    config = _recipe_config("nl3d_mars", mode="preflight")
    record = run.run(config, str(workdir))
    memory, host = record["memory"], record["memory"]["host"]
    assert not memory["fits"] and memory["max_num_ids_per_batch"] is None
    assert record["step_time_s"] is None and host["measured_peak_rss"] is None
    step = memory["train_step"]
    assert host["predicted_peak_rss"] == host["rss_before_steps"] + 4 * step["needed"]
    assert record["verdict"].startswith(
        f"does not fit: the train step needs {preflight.size(step['needed'])} of host RAM per "
        f"device ({preflight.size(step['total'])} compiled + "
        f"{preflight.size(step['step_allocations'])} for a second step's allocations"
    ), record["verdict"]
    assert record["changes"] == ["--config.keep_host_memory=false", "--config.input.clip_len=2"]
    _apply(config, record["changes"])


@pytest.mark.slow  # Two train-step compiles: the full tier.
def test_cpu_prediction_counts_the_kept_heap_and_the_rewrites():
    gib = 2**30
    compiled = {"arguments": gib, "outputs": gib, "aliased": gib, "temporaries": 3 * gib}
    compiled["total"] = 4 * gib
    config = _recipe_config("nl3d_mars")
    assert config.keep_host_memory == "auto"
    # Freed memory kept in the process (the CLI's default on a CPU): room for two steps'
    # allocations. Given back to the system, or on an accelerator: the compiled total.
    entry = preflight._train_step_entry(compiled, preflight.heap_copies(config, "cpu"))
    assert entry["step_allocations"] == 3 * gib and entry["needed"] == 7 * gib
    assert preflight.heap_copies(config, "gpu") == 1
    config.keep_host_memory = "false"
    assert preflight.heap_copies(config, "cpu") == 1

    # What the CPU rewrites keep for the backward pass (temporal_conv's time-shifted copies, the
    # im2col patches) is in the compiled temporaries, so the prediction holds it without an
    # allowance of its own.
    temporaries = {}
    for fast in ("false", "true"):
        config = _recipe_config("nl3d_mars", **{"model.fast_cpu_ops": fast})
        mesh = parallel.make_mesh()
        model, tx, lr_fn = loop.model_and_optimizer(config, 625, 1000)
        init = state_lib.init_clips(config.input)
        abstract, shardings = state_lib.abstract_train_state(model, tx, init, mesh=mesh)
        step_fn = loop.compile_train_step(model, tx, lr_fn, config, shardings, mesh)
        _, entry = preflight._compile_step(step_fn, abstract, config, mesh, 2, 2)
        temporaries[fast] = entry["temporaries"]
    assert temporaries["true"] > temporaries["false"]


def test_fit_num_ids_follows_the_memory_line():
    """Memory = 1000 + 100 P bytes: with 1,850 bytes, P = 8 is the largest that fits."""
    compiled = []

    def compile_at(p):
        compiled.append(p)
        return f"step@{p}", {"total": 1000 + 100 * p}

    valid = lambda p: p >= 2 and (p * 4) % 8 == 0
    p, step, entry = preflight.fit_num_ids(compile_at, 32, {"total": 4200}, 1850, valid)
    assert (p, step, entry["total"]) == (8, "step@8", 1800)
    assert compiled == [16, 8]
    assert preflight.fit_num_ids(compile_at, 32, {"total": 4200}, 1100, valid) == (None,) * 3


def test_verdict_suggests_eval_batches_that_fit():
    config = _recipe_config("nl3d_mars", **{"eval.batch_size": 32})
    gib = 2**30
    record = {
        "memory": {
            "train_step": {"total": gib, "fits": True},
            "eval": {"clip_features": {"total": 9 * gib, "arguments": gib, "fits": False}},
            "capacity_bytes": 5 * gib,
            "capacity_source": "test",
            "max_num_ids_per_batch": 2,
        },
        "devices": {"platform": "gpu", "count": 4},
        "clips_per_s_consumed": 10.0,
        "input_clips_per_s": 100.0,
        "input_bound": False,
    }
    text, changes = preflight.verdict(record, config)
    assert changes == ["--config.eval.batch_size=16"]  # 32 x (5 - 1) / (9 - 1).
    assert (
        text == "evaluation (clip_features) does not fit: 9.0 GiB per device -> about " + changes[0]
    )
    record["memory"]["eval"]["clip_features"].update(total=gib, fits=True)
    text, changes = preflight.verdict(record, config)
    assert text.startswith("OK: fits with 80.0% headroom, compute-bound") and changes == []


def test_bad_preflight_config_names_the_key():
    for key, value in (("preflight.timed_steps", 0), ("preflight.input_seconds", 0.0)):
        config = _recipe_config("gltr_mars", **{"mode": "preflight", key: value})
        with pytest.raises(UserError, match=f"config.{key}"):
            config_lib.validate(config)


def test_known_training_identities_match_the_parsers_statistics():
    from data_prep import registry  # noqa: PLC0415

    for name, ids in names.TRAIN_IDS.items():
        module = registry.get(name)
        for stats in (module.VERIFIED_STATS, module.UNVERIFIED_STATS):
            assert stats.get("train", {}).get("ids", ids) == ids, name


def test_cpu_capacity_is_host_ram_shared_by_the_devices():
    import jax  # noqa: PLC0415

    capacity, source = hardware.memory_capacity(jax.devices()[0], 4)
    assert 0 < capacity <= hardware.host_memory_bytes() * hardware.CPU_USABLE_FRACTION // 4
    assert source.startswith("host RAM available") and source.endswith("x 0.9 / 4 CPU devices")
    assert 0 < hardware.process_rss_bytes() <= hardware.process_peak_rss_bytes()


@pytest.mark.slow
def test_cli_preflight_writes_the_record_and_prints_the_verdict(repo_root, workdir):
    overrides = {**SIZE_KEYS, "mode": "preflight"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vreid_jax.main",
            "--config",
            "configs/gltr_mars.py",
            "--workdir",
            str(workdir),
            *(f"--config.{k}={v}" for k, v in overrides.items()),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((workdir / "preflight.json").read_text())
    assert record["recipe"]["num_classes"] == names.TRAIN_IDS["mars"]
    assert record["memory"]["fits"] and record["step_time_s"] > 0
    assert f"Preflight verdict: {record['verdict']}" in proc.stderr
    assert "per-device memory against" in proc.stderr
