"""Devices and hosts: distributed initialisation, the ('data',) mesh, shardings, host->global arrays."""

from __future__ import annotations

import os

import jax
from absl import logging


def initialize_distributed(mesh_config) -> None:
    """Initialises multi-host JAX when the job has several processes; a no-op otherwise.

    Explicit `mesh_config.coordinator_address` (with `num_processes` and `process_id`) wins; otherwise
    JAX detects TPU pods and SLURM jobs by itself. A single plain process needs no initialisation.
    """
    if mesh_config.coordinator_address:
        if jax.default_backend() == "cpu" or os.environ.get("JAX_PLATFORMS", "") == "cpu":
            # Cross-process collectives on CPU need gloo (tests and CPU clusters).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=mesh_config.coordinator_address,
            num_processes=mesh_config.num_processes,
            process_id=mesh_config.process_id,
        )
    elif _in_managed_cluster():
        jax.distributed.initialize()
    logging.info(
        "JAX process %d of %d; %d local / %d global devices (%s).",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.default_backend(),
    )


def _in_managed_cluster() -> bool:
    """True inside a multi-task SLURM job or on a multi-host TPU slice, where JAX auto-detects."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
