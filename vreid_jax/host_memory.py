"""Keeps freed host memory inside the process where JAX computes on the CPU (glibc's malloc).

XLA:CPU's convolution kernels allocate scratch memory on XLA's worker threads on every call and
free it on return. glibc gives each thread its own arena, serves large blocks with `mmap` and gives
freed memory back to the kernel (`munmap`, or trimming an arena), so every step faults in and zeroes
that memory again, a large share of a CPU train step's time spent in the kernel. With large blocks
served from the heap, the heap never trimmed and one arena for all threads, the pages faulted in
once are reused: once the heap holds the most scratch the threads have used at once (a step or a
few), no more faults, and faster steps (measured: `benchmarks/README.md`, "Host memory on the CPU",
and `benchmarks/host_memory.py`).

The price: the process keeps its peak host memory until it exits, and all threads share one malloc
lock. That is why 'auto' applies it only where JAX will run on the CPU; with an accelerator the
kernels run on the device and the host serves the input pipeline's many threads.

glibc binds a thread to an arena at its first allocation, so this must run before JAX or
TensorFlow start their threads (the CLIs call it before their heavy imports).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os

CHOICES = ("auto", "true", "false")  # `config.keep_host_memory`.

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# Distributions that give JAX a backend other than the CPU.
_ACCELERATOR_PLUGINS = ("jax-cuda", "jax-rocm", "libtpu")


def jax_will_use_cpu() -> bool:
    """Whether JAX's default backend will be the CPU, decided without importing JAX: JAX_PLATFORMS
    puts 'cpu' first, or no GPU/TPU plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    installed = (dist.metadata["Name"] or "" for dist in importlib.metadata.distributions())
    return not any(name.lower().startswith(_ACCELERATOR_PLUGINS) for name in installed)


def keep_freed_memory(setting: str = "auto") -> bool:
    """Applies the malloc settings above when `setting` (one of CHOICES, any case) asks for them;
    returns whether they were applied. A C library other than glibc is left alone.

    `config.keep_host_memory` comes here as `config_lib.validate` checked it; this check is for
    the other callers (the benchmarks' environment variable)."""
    setting = str(setting).lower()
    if setting not in CHOICES:
        raise ValueError(f"keep_host_memory={setting!r}; expected one of {CHOICES}.")
    if setting == "false" or (setting == "auto" and not jax_will_use_cpu()):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # -1 is SIZE_MAX once glibc widens it: never give the heap's top back to the kernel.
    return all(
        libc.mallopt(param, value) == 1
        for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))
    )


def _glibc():
    """The process's C library if it is glibc (it has `gnu_get_libc_version`), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc
