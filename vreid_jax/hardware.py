"""What a device can hold and compute: memory capacity and peak FLOP/s, by jax `device_kind`.

Peak FLOP/s per device kind are the vendors' dense figures. For float32 on NVIDIA GPUs the peak is
the TF32 tensor-core rate, because XLA runs float32 convolutions and matmuls on TF32 tensor cores
at JAX's default precision; on TPUs float32 runs as bfloat16 passes at the default precision. A CPU
has no table entry: its peak is estimated from the core count, the clock in /proc/cpuinfo and the
FLOPs per cycle of the vector units (see `cpu_peak_flops`), and callers say it is an estimate.

Memory capacity is what the device's allocator may use (`memory_stats()['bytes_limit']`) on GPU and
TPU; a CPU device reports none, so its capacity is most of the host RAM available now, shared among
the CPU devices of the process. `process_rss_bytes` / `process_peak_rss_bytes` read what this
process holds, so that a CPU prediction can be checked against the measured peak.
"""

from __future__ import annotations

import os
import platform

# (substring of jax's `device_kind`, dense peak FLOP/s per device in bfloat16, in float32).
PEAK_FLOPS = (
    ("H100 PCIe", 756e12, 378e12),
    ("H100", 989e12, 495e12),  # SXM (device kind "NVIDIA H100 80GB HBM3").
    ("H200", 989e12, 495e12),
    ("A100", 312e12, 156e12),
    ("L4", 121e12, 60e12),
    ("TPU v4", 275e12, 275e12),
    ("TPU v5 lite", 197e12, 197e12),
    ("TPU v5p", 459e12, 459e12),
    ("TPU v6 lite", 918e12, 918e12),
)

# A CPU core's float32 FLOPs per cycle: 2 FMA pipes x 8 float32 lanes (256-bit datapaths; Zen 4
# executes AVX-512 in two halves) x 2 FLOPs per FMA. AVX512-BF16 dot products double the rate.
CPU_FP32_FLOPS_PER_CYCLE = 32


def _cpuinfo_lines(prefix: str) -> list[str]:
    """The values of /proc/cpuinfo's lines starting with `prefix` (none off Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return [line.split(":", 1)[1].strip() for line in f if line.startswith(prefix)]
    except OSError:
        return []


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    names = _cpuinfo_lines("model name")
    return names[0] if names else platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    flags = _cpuinfo_lines("flags")
    return set(flags[0].split()) if flags else set()


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_peak_flops(cores: int, dtype: str) -> float | None:
    """Estimated peak FLOP/s of `cores` cores (None when the clock is unknown)."""
    mhz = [float(v) for v in _cpuinfo_lines("cpu MHz")]
    if not mhz:
        return None
    per_cycle = CPU_FP32_FLOPS_PER_CYCLE
    if dtype == "bfloat16" and "avx512_bf16" in cpu_flags():
        per_cycle *= 2
    return cores * max(mhz) * 1e6 * per_cycle


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one accelerator of `device_kind` in `dtype`; None if not in the table."""
    for key, bf16, fp32 in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else fp32
    return None


def device_peak_flops(
    device, dtype: str, devices_sharing_host: int = 1
) -> tuple[float | None, str]:
    """`(peak FLOP/s of one device, where the figure comes from)`; `(None, why)` when unknown.

    A CPU device's peak is the estimate for this process's cores divided among the
    `devices_sharing_host` CPU devices of the process (fake devices share the cores).
    """
    peak = peak_flops(device.device_kind, dtype)
    if peak is not None:
        return peak, "vendor dense peak"
    if device.platform == "cpu":
        cores = cpu_cores()
        peak = cpu_peak_flops(cores, dtype)
        if peak is not None:
            return peak / devices_sharing_host, (
                f"estimate: {cores} cores x max clock x {CPU_FP32_FLOPS_PER_CYCLE} float32 "
                f"FLOPs/cycle / {devices_sharing_host} CPU devices"
            )
    return None, f"unknown device kind {device.device_kind!r}"


def host_memory_bytes() -> int | None:
    """The host's physical memory (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def host_available_bytes() -> int | None:
    """The memory the host can give new allocations now (Linux's MemAvailable; None elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# The share of the host RAM available that a CPU step may be sized to. The rest is left for what
# runs beside the step and is not in its compiled memory (the state's initialisation, the input
# pipeline's threads), for other processes' growth, and for the prediction's error (measured within
# a few percent: benchmarks/README.md, "Preflight against measurements").
CPU_USABLE_FRACTION = 0.9


def _status_bytes(field: str) -> int | None:
    """A size line of /proc/self/status (`VmRSS`, `VmHWM`) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_rss_bytes() -> int | None:
    """The host memory this process holds now (resident set; None where the system does not say)."""
    return _status_bytes("VmRSS")


def process_peak_rss_bytes() -> int | None:
    """The most host memory this process has held so far (peak resident set, `VmHWM`)."""
    return _status_bytes("VmHWM")


def memory_capacity(device, devices_sharing_host: int = 1) -> tuple[int | None, str]:
    """`(bytes one device's executables may use, where the figure comes from)`.

    GPU/TPU: the allocator's limit (`memory_stats()['bytes_limit']`). CPU: `CPU_USABLE_FRACTION` of
    the host's RAM available now, divided among the process's `devices_sharing_host` CPU devices.
    `(None, why)` when neither is known.
    """
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (backends without the call raise various errors)
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform} bytes_limit of the allocator"
    if device.platform == "cpu":
        # What is free now, not the physical size: other processes, and this one's own runtime,
        # already hold the rest (a step sized to all the RAM thrashes).
        host, total = host_available_bytes(), host_memory_bytes()
        if host or total:
            what = "available" if host else "physical"
            host = host or total
            return int(host * CPU_USABLE_FRACTION) // devices_sharing_host, (
                f"host RAM {what} ({host / 2**30:.1f} GiB"
                + (f" of {total / 2**30:.1f}" if total and what == "available" else "")
                + f") x {CPU_USABLE_FRACTION:g} / {devices_sharing_host} CPU devices"
            )
    return None, f"unknown: {device.platform} device reports no memory limit"
