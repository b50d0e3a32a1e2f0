"""`vreid_jax.host_memory`: where the malloc settings apply, and that they stop the page faults."""

import json
import subprocess
import sys

import pytest

from vreid_jax import host_memory
from vreid_jax.errors import UserError

# Runs a convolution's forward and backward pass and counts the page faults of each call after
# two warm-ups. XLA:CPU's convolution kernels allocate scratch memory on its worker threads; with
# glibc's defaults each call maps (and faults in) that memory afresh.
_PROGRAM = """
import json, resource, sys
from vreid_jax import host_memory
applied = host_memory.keep_freed_memory(sys.argv[1])
import jax, jax.numpy as jnp
def loss(x, w):
    dims = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)
    return jnp.sum(y * y)
step = jax.jit(jax.grad(loss, argnums=(0, 1)))
x, w = jnp.ones((8, 512, 128, 8)), jnp.full((3, 3, 8, 8), 0.01)
faults = []
for _ in range(2 + 40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(step(x, w))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults_per_call": faults[2:]}))
"""


def _faults_per_call(setting: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, setting],
        capture_output=True,
        text=True,
        check=True,
        env={"JAX_PLATFORMS": "cpu", "PATH": ""},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._glibc() is None, reason="needs glibc's malloc")
def test_kept_memory_stops_the_page_faults_of_repeated_convolutions():
    default = _faults_per_call("false")
    kept = _faults_per_call("true")
    assert not default["applied"] and kept["applied"]
    # Scratch memory above glibc's largest mmap threshold (32 MiB), so the default maps it afresh
    # on every call: 12k-16k faults a call here. Kept, the heap grows until it holds the most
    # scratch the threads have used at once, then its pages are reused. How many calls that takes
    # depends on how the threads overlap (CI once saw three calls of 12k faults in a row on a busy
    # machine), so compare totals: kept, 20k-53k over 40 calls under load; the default, 500k.
    assert min(default["faults_per_call"]) > 10_000
    assert sum(kept["faults_per_call"]) < 0.25 * sum(default["faults_per_call"])


def test_auto_follows_the_platform_jax_will_use(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host_memory.jax_will_use_cpu()
    assert not host_memory.keep_freed_memory("auto")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.jax_will_use_cpu()
    monkeypatch.delenv("JAX_PLATFORMS")
    assert host_memory.jax_will_use_cpu()  # The test environment has no GPU/TPU plugin.


def test_false_applies_nothing_and_a_bad_value_names_the_key():
    assert not host_memory.keep_freed_memory("false")
    with pytest.raises(UserError, match="config.keep_host_memory='sometimes'"):
        host_memory.keep_freed_memory("sometimes")
