"""mode=preflight: will the configured recipe fit, and how fast will it train, on these devices?

Before a long run on GPUs/TPUs, `run(config, workdir)`:
1. compiles the full-size train step (`loop.compile_train_step`, against the abstract state: no
   weights file is read, nothing is initialised) and the evaluation functions
   (`features.<extractor>.lowered`), and reads each executable's per-device memory
   (`memory_analysis`) against the device's capacity (`hardware.memory_capacity`, read after the
   compiles). On a CPU the step needs more than its compiled total: see `heap_copies`;
2. reads the step's FLOPs (`cost_analysis`);
3. times a few steps on random uint8 clips in the real batch structure and shardings. A step that
   does not fit is never run: the per-device memory is fitted as a line in P
   (`config.input.num_ids_per_batch`) from a second compile at a smaller P, the largest P that fits
   is compiled and timed, and the configured step time is extrapolated by clip count. On a CPU the
   process's peak RSS after the steps is recorded next to the predicted one;
4. times the real training input pipeline on synthetic frames at the configured size
   (`data.throughput`) against the clips/s the step consumes;
5. prints a verdict with the exact `--config.` overrides to apply, and writes
   `workdir/preflight.json` (keys: see `run`).

The dataset is not read: the classifier size comes from the built dataset's metadata when
`config.data.data_dir` holds it, else from the dataset's known training identities
(`data_prep.names.TRAIN_IDS`).
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time

import jax
import numpy as np
from absl import logging

from data_prep import names
from vreid_jax import files, hardware, logging_utils, parallel
from vreid_jax.data import throughput
from vreid_jax.errors import UserError
from vreid_jax.evaluation import features
from vreid_jax.models import registry
from vreid_jax.training import loop
from vreid_jax.training import state as state_lib

# The learning-rate schedule's epoch length does not change any shape or cost.
_NOMINAL_STEPS_PER_EPOCH = 1000
# Compiles tried at most to find the largest P that fits, after the line's estimate.
_MAX_FIT_COMPILES = 3


def run(config, workdir: str) -> dict:
    """Runs the preflight of `config` on the devices present; returns and writes its record.

    `workdir/preflight.json` (process 0): `{"recipe", "devices", "memory": {"train_step", "eval",
    "capacity_bytes", "capacity_source", "fits", "max_num_ids_per_batch", "host"}, "flops_per_step",
    "peak_flops_per_device", "step_time_s", "step_time_extrapolated", "predicted_mfu",
    "clips_per_s_consumed", "input_clips_per_s", "input_bound", "verdict", "changes", "seconds"}`.
    Memory entries are per device, in bytes (the train step's `needed` is what is checked against
    the capacity); `host` is the process's RSS, predicted and measured, on a CPU (else None);
    clips/s are per process.
    """
    start = time.perf_counter()
    mesh = parallel.make_mesh()
    num_ids, num_instances = config.input.num_ids_per_batch, config.input.num_instances
    parallel.check_train_batch(config.input, mesh)
    num_classes, classes_source = num_classes_for(config)
    device = jax.local_devices()[0]
    rss_at_start = hardware.process_rss_bytes()
    logging.info(
        "Preflight of %s on %s: %d x %s, %d process(es); %d classes from %s.",
        config.model.name,
        config.data.name,
        jax.device_count(),
        device.device_kind,
        jax.process_count(),
        num_classes,
        classes_source,
    )

    # ------------------------------------------------------------------ compile and size
    model, tx, lr_fn = loop.model_and_optimizer(config, num_classes, _NOMINAL_STEPS_PER_EPOCH)
    init_clips = state_lib.init_clips(config.input)
    abstract_state, shardings = state_lib.abstract_train_state(model, tx, init_clips, mesh=mesh)
    step_fn = loop.compile_train_step(model, tx, lr_fn, config, shardings, mesh)
    copies = heap_copies(config, device.platform)
    compile_at = functools.partial(_compile_step, step_fn, abstract_state, config, mesh, copies)
    compiled, train_memory = compile_at(num_ids)
    flops = _flops(compiled) * jax.device_count()
    eval_memory = {
        name: memory_of(lowered.compile())
        for name, lowered in _lowered_eval(model, config, mesh, abstract_state).items()
    }
    # Read after compiling: on a CPU the compiler's memory stays in this process, so what the host
    # can still give is what the state and the step may use.
    capacity, capacity_source = hardware.memory_capacity(device, jax.local_device_count())
    rss = {  # This process, before any step runs: at the start, the compiles' peak, now.
        "rss_at_start": rss_at_start,
        "compile_peak_rss": hardware.process_peak_rss_bytes(),
        "rss_before_steps": hardware.process_rss_bytes(),
    }
    for entry in (train_memory, *eval_memory.values()):
        entry["fits"] = capacity is None or needed(entry) <= capacity

    timed_ids, timed_step = num_ids, compiled
    if not train_memory["fits"]:
        valid = lambda p: _valid_num_ids(p, num_instances, mesh)
        timed_ids, timed_step, fitted = fit_num_ids(
            compile_at, num_ids, train_memory, capacity, valid
        )
        if fitted is not None:
            train_memory["at_max_num_ids_per_batch"] = fitted

    # ------------------------------------------------------------------ time
    # Only a step predicted to fit gets here: one that does not is reported, never run (on a CPU an
    # oversized step would take the host's RAM and the kernel would kill the process, or others).
    step_time = None
    if timed_step is not None:
        state, _ = state_lib.create_train_state(model, tx, init_clips, seed=config.seed, mesh=mesh)
        batch = random_batch(config, timed_ids, num_classes, mesh)
        times, _ = time_steps(timed_step, state, batch, config.preflight.timed_steps)
        step_time = statistics.median(times)
        step_time *= num_ids / timed_ids  # Extrapolated by clip count when timed at a smaller P.
    host = None
    if device.platform == "cpu":
        timed_memory = None  # The entry of the P that was run, if any.
        if timed_step is not None:
            timed_memory = train_memory.get("at_max_num_ids_per_batch", train_memory)
        host = host_record(rss, train_memory, timed_memory, copies)
    pipeline_rate = throughput.train_clips_per_s(
        config.input,
        seconds=config.preflight.input_seconds,
        image_format=_image_format(config.data.name),
        process_count=jax.process_count(),
    )

    # ------------------------------------------------------------------ record and verdict
    peak, peak_source = hardware.device_peak_flops(
        device, config.model.dtype, jax.local_device_count()
    )
    global_clips = num_ids * num_instances
    consumed = global_clips / step_time / jax.process_count() if step_time else None
    input_rate = pipeline_rate["clips_per_s"]
    record = {
        "recipe": {
            "model": config.model.name,
            "dataset": config.data.name,
            "dtype": config.model.dtype,
            "global_batch_clips": global_clips,
            "num_ids_per_batch": num_ids,
            "num_instances": num_instances,
            "clip_len": config.input.clip_len,
            "height": config.input.height,
            "width": config.input.width,
            "num_classes": num_classes,
            "num_classes_source": classes_source,
        },
        "devices": {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "count": jax.device_count(),
            "processes": jax.process_count(),
        },
        "memory": {
            "train_step": train_memory,
            "eval": eval_memory,
            "capacity_bytes": capacity,
            "capacity_source": capacity_source,
            "fits": all(e["fits"] for e in (train_memory, *eval_memory.values())),
            "max_num_ids_per_batch": timed_ids if timed_step is not None else None,
            "host": host,
        },
        "flops_per_step": flops,
        "peak_flops_per_device": peak,
        "peak_flops_source": peak_source,
        "step_time_s": step_time,
        "step_time_extrapolated": timed_step is not None and timed_ids != num_ids,
        "timed_num_ids_per_batch": timed_ids if timed_step is not None else None,
        "predicted_mfu": (
            flops / step_time / (peak * jax.device_count()) if step_time and peak else None
        ),
        "clips_per_s_consumed": consumed,
        "input_clips_per_s": input_rate,
        "input_clips_per_cpu_s": pipeline_rate["clips_per_cpu_s"],
        "input_image_format": pipeline_rate["image_format"],
        "input_bound": consumed is not None and input_rate < consumed,
    }
    record["verdict"], record["changes"] = verdict(record, config)
    record["seconds"] = time.perf_counter() - start
    if host is not None:  # Everything the preflight ran, the input pipeline's timing included.
        host["peak_rss_at_end"] = hardware.process_peak_rss_bytes()
    print_report(record)
    if jax.process_index() == 0:
        files.write_json_atomic(os.path.join(workdir, "preflight.json"), record)
    return record


def num_classes_for(config) -> tuple[int, str]:
    """`(training identities, where the number comes from)`, without reading the dataset: the
    built dataset's metadata in `config.data.data_dir` when it is there, else the dataset's known
    count."""
    name, data_dir = config.data.name, config.data.data_dir
    if data_dir:
        from data_prep import build, reader  # noqa: PLC0415  (TFDS only for a built dataset)

        if build.is_built(name, data_dir):
            rows = reader.summary(name, data_dir, split_index=config.data.split)
            ids = next(r["ids"] for r in rows if r["split"] == "train")
            return ids, "the built dataset's metadata (config.data.data_dir)"
    return names.TRAIN_IDS[name], f"the known {name} training identities (no built dataset read)"


def _image_format(dataset: str) -> str:
    from data_prep import registry  # noqa: PLC0415  (imports every parser module)

    return registry.get(dataset).IMAGE_FORMAT


# ----------------------------------------------------------------------------- compiling and sizing


def memory_of(compiled) -> dict:
    """Per-device bytes of a compiled executable (`memory_analysis`): arguments, outputs,
    temporaries, generated code, the bytes outputs share with donated arguments (`aliased`), and
    `total` = arguments + outputs - aliased + temporaries + generated code."""
    stats = compiled.memory_analysis()
    if stats is None:  # A backend without the analysis.
        raise UserError(f"The {jax.default_backend()} backend gives no memory analysis.")
    entry = {
        "arguments": int(stats.argument_size_in_bytes),
        "outputs": int(stats.output_size_in_bytes),
        "temporaries": int(stats.temp_size_in_bytes),
        "generated_code": int(stats.generated_code_size_in_bytes),
        "aliased": int(stats.alias_size_in_bytes),
    }
    entry["total"] = (
        entry["arguments"]
        + entry["outputs"]
        - entry["aliased"]
        + entry["temporaries"]
        + entry["generated_code"]
    )
    return entry


def heap_copies(config, platform_name: str) -> int:
    """How many train steps' worth of per-call allocations the host may hold at once: 2 on a CPU
    whose freed memory stays in the process (`config.keep_host_memory` 'true', or 'auto' on a CPU;
    glibc), else 1.

    Why: XLA:CPU allocates each call's temporaries (the compiled `temporaries`) as one block,
    `posix_memalign(64, T)`, on a worker thread. With freed memory kept in the process
    (`host_memory`: no mmap, no trimming) that block comes from the heap, and the next call's
    request (T plus the alignment's slack) fits in the freed block only where it has merged with
    free neighbours; otherwise the heap grows by another T, for good. (The previous call's block is
    also sometimes freed only after the next call has allocated its own.) Logged on the 2-core CPU
    (NL3D, 8 clips of 8x128x64, T = 2.6 GiB): the peak held one block in some runs and two in most;
    with `keep_host_memory=false` it held one (benchmarks/README.md, "Preflight against
    measurements"). A step is sized for two, so that preflight never runs what the host cannot hold.
    Everything the CPU rewrites keep for the backward pass (`models.pointwise_conv`: temporal_conv's
    time-shifted copies, the im2col patches) is an XLA buffer, already in the compiled temporaries.

    In a notebook the CLI has not applied the setting, so 2 over-estimates there (the safe side).
    """
    if platform_name != "cpu" or platform.libc_ver()[0] != "glibc":
        return 1
    return 2 if str(config.keep_host_memory).lower() in ("true", "auto") else 1


def needed(entry: dict) -> int:
    """Bytes per device an executable's memory entry needs: its compiled `total`, plus, for a CPU
    train step, the extra heap copies of its per-call allocations (`heap_copies`)."""
    return entry.get("needed", entry["total"])


def _train_step_entry(memory: dict, copies: int) -> dict:
    """A train step's memory entry with what each call allocates (`step_allocations`: outputs not
    written over donated arguments, plus temporaries), `heap_copies` and `needed`."""
    step_allocations = memory["outputs"] - memory["aliased"] + memory["temporaries"]
    return {
        **memory,
        "step_allocations": step_allocations,
        "heap_copies": copies,
        "needed": memory["total"] + (copies - 1) * step_allocations,
    }


def host_record(rss: dict, configured: dict, timed: dict | None, copies: int) -> dict:
    """The CPU process's RSS, predicted and measured (bytes; None where /proc does not say).

    `rss` holds the readings before any step ran (`rss_at_start`, `compile_peak_rss`,
    `rss_before_steps`). Predicted peak = RSS after the compiles + what the local devices' train
    steps need (`needed` per device): the compiler's own memory is already in that RSS.
    `measured_peak_rss` is the process's peak RSS after the timed steps (None when nothing was
    run), to compare with `predicted_peak_rss_timed` (at the P that was run, `timed`).
    """
    devices, before = jax.local_device_count(), rss["rss_before_steps"]

    def predicted(entry, need=needed):
        return None if before is None or entry is None else before + devices * need(entry)

    measured = hardware.process_peak_rss_bytes() if timed is not None else None
    timed_prediction = predicted(timed)
    return {
        **rss,
        "heap_copies": copies,
        "predicted_peak_rss": predicted(configured),
        # Where the heap happens to reuse the previous call's block: one step's allocations.
        "predicted_peak_rss_one_copy": predicted(configured, lambda entry: entry["total"]),
        "timed_num_ids_per_batch": None if timed is None else timed["num_ids_per_batch"],
        "predicted_peak_rss_timed": timed_prediction,
        "measured_peak_rss": measured,
        "measured_over_predicted": (
            round(measured / timed_prediction, 3) if measured and timed_prediction else None
        ),
    }


def _lowered_eval(model, config, mesh, abstract_state) -> dict:
    """The evaluation's compiled functions, lowered (`features.<extractor>.lowered`), and those of
    the pass a training kind makes before the first step (TF-CLIP's CLIP-Memory: every training
    frame through the encoder, `kinds.TFClipTraining.prepare`) under 'clip_memory'."""
    variables = state_lib.variables_of(abstract_state)
    lowered = features.extractor_for(model, config, mesh).lowered(variables)
    if registry.spec(config.model.name).training == registry.TFCLIP_TRAINING:
        memory_pass = features.ClipAverage(model, config, mesh, method="memory_features")
        lowered["clip_memory"] = memory_pass.lowered(variables)["clip_features"]
    return lowered


def _flops(compiled) -> float:
    """FLOPs of one device's share of a compiled step (XLA counts a multiply-add as 2)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def _abstract_batch(config, num_ids: int, mesh) -> dict:
    cfg = config.input
    rows = num_ids * cfg.num_instances
    sharding = parallel.data_sharding(mesh)
    clip = (rows, cfg.clip_len, cfg.height, cfg.width, 3)
    batch = {
        "clips": jax.ShapeDtypeStruct(clip, np.uint8, sharding=sharding),
        "labels": jax.ShapeDtypeStruct((rows,), np.int32, sharding=sharding),
        "pids": jax.ShapeDtypeStruct((rows,), np.int32, sharding=sharding),
    }
    if registry.spec(config.model.name).takes_cameras:
        batch["cameras"] = jax.ShapeDtypeStruct((rows,), np.int32, sharding=sharding)
    return batch


def _compile_step(step_fn, abstract_state, config, mesh, copies: int, num_ids: int):
    """`(compiled train step, its memory entry)` for global batches of `num_ids` identities, with
    `copies` heap copies of its per-call allocations in `needed` (`heap_copies`)."""
    started = time.perf_counter()
    compiled = step_fn.lower(abstract_state, _abstract_batch(config, num_ids, mesh)).compile()
    logging.info(
        "Compiled the train step at num_ids_per_batch=%d in %.1f s.",
        num_ids,
        time.perf_counter() - started,
    )
    return compiled, {
        "num_ids_per_batch": num_ids,
        **_train_step_entry(memory_of(compiled), copies),
    }


def _valid_num_ids(num_ids: int, num_instances: int, mesh) -> bool:
    """A P the run accepts (`parallel.train_batch_problem`) with at least 2 identities (batch-hard
    mining needs negatives)."""
    return num_ids >= 2 and parallel.train_batch_problem(num_ids, num_instances, mesh) is None


def fit_num_ids(compile_at, num_ids: int, memory: dict, capacity: int, valid):
    """The largest valid P below `num_ids` whose train step fits in `capacity` bytes per device.

    The per-device memory (`needed`) is a line in P (the batch share and the activations grow with
    it, the replicated state does not): it is drawn through `memory` (at `num_ids`) and a compile
    at about half of it, the line's largest P is compiled to check, and smaller valid ones are
    tried while it does not fit (`_MAX_FIT_COMPILES` at most).

    Args:
      compile_at: `P -> (compiled step, memory entry)`.
      num_ids: the configured P.
      memory: the memory entry at `num_ids` (`needed` of it is compared with `capacity`).
      capacity: bytes per device.
      valid: `P -> bool`, the values a run accepts.

    Returns:
      `(P, compiled step, memory entry)`, or `(None, None, None)` when no valid P fits.
    """
    candidates = [p for p in range(num_ids - 1, 0, -1) if valid(p)]
    if not candidates:
        return None, None, None
    second = next((p for p in candidates if p <= num_ids // 2), candidates[-1])
    compiled, second_memory = compile_at(second)
    tried = {second: (compiled, second_memory)}
    slope = (needed(memory) - needed(second_memory)) / (num_ids - second)
    if slope > 0:
        estimate = second + (capacity - needed(second_memory)) / slope
    else:  # Memory that does not grow with P: only what was measured counts.
        estimate = second if needed(second_memory) <= capacity else 0
    for p in [c for c in candidates if c <= estimate][:_MAX_FIT_COMPILES]:
        compiled, entry = tried.get(p) or compile_at(p)
        if needed(entry) <= capacity:
            return p, compiled, entry
    return None, None, None


# ----------------------------------------------------------------------------- timing


def random_batch(config, num_ids: int, num_classes: int, mesh) -> dict:
    """A global training batch of random uint8 clips with P x K labels, in the pipeline's structure
    and shardings; each process contributes its rows."""
    cfg = config.input
    rows = num_ids * cfg.num_instances
    local = rows // jax.process_count()
    mine = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    rng = np.random.default_rng(jax.process_index())
    labels = np.repeat(np.arange(num_ids) % num_classes, cfg.num_instances).astype(np.int32)
    clip = (local, cfg.clip_len, cfg.height, cfg.width, 3)
    batch = {
        "clips": rng.integers(0, 256, clip, dtype=np.uint8),
        "labels": labels[mine],
        "pids": labels[mine] + 1,
    }
    if registry.spec(config.model.name).takes_cameras:  # Which camera changes no cost.
        batch["cameras"] = np.zeros(local, np.int32)
    return parallel.host_to_global(batch, mesh)


def time_steps(compiled, state, batch, steps: int, warmup: int = 1):
    """Runs `warmup` untimed calls of the compiled step, then `steps` timed ones.

    Returns the seconds of each timed call and the last call's (state, metrics)."""
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - started)
    return times, (state, metrics)


# ----------------------------------------------------------------------------- verdict and report


def size(num_bytes) -> str:
    """Bytes as a readable size: '71.3 GiB', '12.0 MiB'."""
    if num_bytes is None:
        return "unknown"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(num_bytes) >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} B"


# Per evaluation function: the config key of its batch, when it has one.
_EVAL_BATCH_KEYS = {"clip_features": "eval.batch_size", "frame_features": "eval.frame_batch_size"}


def verdict(record: dict, config) -> tuple[str, list[str]]:
    """`(verdict, changes)`: one line saying whether the recipe fits and what bounds its speed,
    and the `--config.` overrides it recommends (each a valid override of `config`)."""
    memory = record["memory"]
    capacity, train_memory = memory["capacity_bytes"], memory["train_step"]
    devices = record["devices"]
    problems, changes = [], []
    if not train_memory["fits"]:
        of_what = " of host RAM" if devices["platform"] == "cpu" else ""
        text = (
            f"does not fit: the train step needs {size(needed(train_memory))}{of_what} per device"
        )
        heap_copies = train_memory.get("heap_copies", 1)
        if heap_copies > 1:
            text += (
                f" ({size(train_memory['total'])} compiled + "
                f"{size((heap_copies - 1) * train_memory['step_allocations'])} for a second "
                "step's allocations, which the kept heap can hold: config.keep_host_memory)"
            )
        text += f", {size(capacity)} available ({memory['capacity_source']})"
        options = []
        fitted = memory["max_num_ids_per_batch"]
        if fitted is not None:
            flag = f"--config.input.num_ids_per_batch={fitted}"
            fitted_need = needed(train_memory["at_max_num_ids_per_batch"])
            options.append(f"set {flag} (fits with {size(fitted_need)})")
            changes.append(flag)
        if heap_copies > 1 and train_memory["total"] <= capacity:
            # Freed memory goes back to the system: one step's allocations at a time, but every
            # call faults its pages in again (host_memory: slower steps).
            flag = "--config.keep_host_memory=false"
            options.append(f"set {flag} (needs {size(train_memory['total'])}, steps ~12% slower)")
            changes.append(flag)
        if config.model.dtype == "float32" and devices["platform"] != "cpu":
            options.append("--config.model.dtype=bfloat16")
            changes.append("--config.model.dtype=bfloat16")
        fewer_instances = config.input.num_instances // 2
        if (
            fewer_instances >= (2 if config.loss.triplet_weight > 0 else 1)
            and (config.input.num_ids_per_batch * fewer_instances) % devices["count"] == 0
        ):
            flag = f"--config.input.num_instances={fewer_instances}"
            options.append(f"fewer clips per identity ({flag})")
            changes.append(flag)
        if config.input.clip_len > 1:
            flag = f"--config.input.clip_len={config.input.clip_len // 2}"
            options.append(f"fewer frames ({flag})")
            changes.append(flag)
        problems.append(text + " -> " + ", or ".join(options))
    for name, entry in memory["eval"].items():
        if entry["fits"]:
            continue
        text = f"evaluation ({name}) does not fit: {size(entry['total'])} per device"
        key = _EVAL_BATCH_KEYS.get(name)
        if key is not None:
            batch = _suggested_eval_batch(entry, capacity, config, key, devices["count"])
            flag = f"--config.{key}={batch}"
            text += f" -> about {flag}"
            changes.append(flag)
        else:
            text += " -> lower the largest of config.eval.length_buckets"
        problems.append(text)
    consumed, produced = record["clips_per_s_consumed"], record["input_clips_per_s"]
    if record["input_bound"]:
        text = (
            f"input-bound: the pipeline gives {produced:.1f} clips/s per process on this host, "
            f"the step consumes {consumed:.1f}"
        )
        flags = []
        if config.input.num_parallel_calls >= 0:
            flags.append("--config.input.num_parallel_calls=-1")
        if config.input.threadpool_size > 0:
            flags.append("--config.input.threadpool_size=0")
        changes += flags
        text += " -> " + ", ".join(
            [*(f"set {f}" for f in flags), "give each process more CPU cores or add hosts"]
        )
        problems.append(text)
    if problems:
        return "; ".join(problems), changes
    headroom = (
        f"fits with {100 * (1 - _largest(memory) / capacity):.1f}% headroom"
        if capacity
        else f"capacity unknown ({memory['capacity_source']})"
    )
    if consumed is None:
        return f"OK: {headroom}", changes
    return (
        f"OK: {headroom}, compute-bound (the pipeline gives {produced:.1f} clips/s per process, "
        f"the step consumes {consumed:.1f})"
    ), changes


def _largest(memory: dict) -> int:
    return max(needed(e) for e in (memory["train_step"], *memory["eval"].values()))


def _suggested_eval_batch(entry: dict, capacity: int, config, key: str, num_devices: int) -> int:
    """An evaluation batch whose memory, scaled from `entry`'s, fits: a multiple of the devices."""
    section, leaf = key.split(".")
    batch = config[section][leaf]
    growing = max(entry["total"] - entry["arguments"], 1)
    scaled = int(batch * max(capacity - entry["arguments"], 0) / growing)
    return max(num_devices, scaled // num_devices * num_devices)


def _host_rows(host: dict) -> list[list[str]]:
    rows = [
        ["at the start", size(host["rss_at_start"])],
        ["peak while compiling", size(host["compile_peak_rss"])],
        ["after compiling", size(host["rss_before_steps"])],
        [
            "predicted peak of the configured step",
            size(host["predicted_peak_rss"])
            + (
                f" ({size(host['predicted_peak_rss_one_copy'])} where the heap reuses the "
                "previous step's block)"
                if host["heap_copies"] > 1
                else ""
            ),
        ],
    ]
    if host["measured_peak_rss"] is not None:
        rows += [
            [
                f"predicted / measured peak of the step run (P={host['timed_num_ids_per_batch']})",
                f"{size(host['predicted_peak_rss_timed'])} / {size(host['measured_peak_rss'])}"
                f" (measured / predicted {host['measured_over_predicted']})",
            ]
        ]
    else:
        rows.append(["measured peak", "no step run (none predicted to fit)"])
    return rows


def print_report(record: dict) -> str:
    """Logs and returns the preflight's tables and verdict."""
    memory, recipe, devices = record["memory"], record["recipe"], record["devices"]
    capacity = memory["capacity_bytes"]
    rows = []
    entries = [("train step", memory["train_step"])]
    if "at_max_num_ids_per_batch" in memory["train_step"]:
        fitted = memory["train_step"]["at_max_num_ids_per_batch"]
        entries.append((f"train step at P={fitted['num_ids_per_batch']}", fitted))
    entries += [(f"eval {name}", entry) for name, entry in memory["eval"].items()]
    for label, entry in entries:
        share = f"{100 * needed(entry) / capacity:.0f}%" if capacity else "?"
        fits = "yes" if capacity is None or needed(entry) <= capacity else "NO"
        rows.append(
            [label, *(size(entry[k]) for k in ("arguments", "outputs", "temporaries")),
             size(entry["total"]), size(needed(entry)), share, fits]
        )  # fmt: skip
    title = (
        f"Preflight: {recipe['model']} on {recipe['dataset']}, {recipe['global_batch_clips']} "
        f"clips of {recipe['clip_len']}x{recipe['height']}x{recipe['width']} ({recipe['dtype']}) "
        f"on {devices['count']} x {devices['device_kind']}; per-device memory against "
        f"{size(capacity)} ({memory['capacity_source']})"
    )
    header = ["executable", "arguments", "outputs", "temporaries", "total", "needed"]
    header += ["of capacity", "fits"]
    text = logging_utils.log_table(title, header, rows)
    host = memory["host"]
    if host is not None:
        text += "\n" + logging_utils.log_table(
            "Preflight: host RAM of this process (RSS)", ["quantity", "value"], _host_rows(host)
        )
    step = record["step_time_s"]
    mfu = record["predicted_mfu"]
    facts = [
        ["FLOPs per step", f"{record['flops_per_step'] / 1e9:.1f} GFLOP"],
        [
            "predicted step time",
            "not run (nothing fits)"
            if step is None
            else f"{step:.3f} s"
            + (
                f" (extrapolated from P={record['timed_num_ids_per_batch']})"
                if record["step_time_extrapolated"]
                else ""
            ),
        ],
        [
            "predicted MFU",
            "unknown peak" if mfu is None else f"{100 * mfu:.1f}% ({record['peak_flops_source']})",
        ],
        [
            "clips/s consumed per process",
            "-"
            if record["clips_per_s_consumed"] is None
            else f"{record['clips_per_s_consumed']:.1f}",
        ],
        [
            "input pipeline clips/s per process",
            f"{record['input_clips_per_s']:.1f} (this host, synthetic "
            f"{record['input_image_format']} frames)",
        ],
    ]
    text += "\n" + logging_utils.log_table("Preflight: speed", ["quantity", "value"], facts)
    lines = [f"Preflight verdict: {record['verdict']}"]
    if record["changes"]:
        lines.append("Preflight changes: " + " ".join(record["changes"]))
    for line in lines:
        logging.info("%s", line)
    return text + "\n" + "\n".join(lines)
