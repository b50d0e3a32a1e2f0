"""Devices and hosts: distributed initialisation, the ('data',) mesh, shardings, host->global arrays."""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from vreid_jax import errors


def initialize_distributed(mesh_config) -> None:
    """Initialises multi-host JAX when the job has several processes; a no-op otherwise.

    Explicit `mesh_config.coordinator_address` (with `num_processes` and `process_id`) wins; otherwise
    JAX detects TPU pods and SLURM jobs by itself. A single plain process needs no initialisation.
    """
    if mesh_config.coordinator_address:
        # Cross-process collectives between CPU devices need gloo (CPU clusters, the tests); the
        # setting only concerns the CPU backend. Asking for the backend here would initialise it,
        # which must not happen before `jax.distributed.initialize`.
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


DATA_AXIS = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D ('data',) mesh over `devices` (default: every device of every process).

    Axis type Auto, so the (2+1)D model may fold the batch axis with time inside jit.
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(
        np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
    )


def data_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Leading (batch) axis split over the 'data' axis; the rest replicated."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def check_divisible(global_batch_size: int, mesh: jax.sharding.Mesh, what: str) -> None:
    """Raises (naming the config key `what`) unless the global batch splits evenly over the mesh."""
    problem = _indivisible(global_batch_size, mesh, what)
    if problem:
        raise errors.UserError(problem)


def check_train_batch(input_config, mesh: jax.sharding.Mesh) -> None:
    """Raises, naming the config key, unless P identities x K clips (`config.input`) can be the
    global training batch on `mesh` (`train_batch_problem`)."""
    problem = train_batch_problem(input_config.num_ids_per_batch, input_config.num_instances, mesh)
    if problem:
        raise errors.UserError(problem)


def train_batch_problem(num_ids: int, num_instances: int, mesh: jax.sharding.Mesh) -> str | None:
    """Why P = `num_ids` identities x K = `num_instances` clips cannot be the global training batch
    on `mesh`, or None if they can: the P x K clips split evenly over the devices, and the P
    identities over the processes (each contributes P / processes of them, `data.sampling`).

    The one statement of these rules: training and preflight check the configured batch with it
    (`check_train_batch`), and preflight its smaller candidates."""
    problem = _indivisible(
        num_ids * num_instances, mesh, "config.input.num_ids_per_batch * num_instances"
    )
    if problem:
        return problem
    if num_ids % jax.process_count():
        return (
            f"config.input.num_ids_per_batch={num_ids} is not divisible by the "
            f"{jax.process_count()} processes; each process contributes P / processes identities."
        )
    return None


def _indivisible(global_batch_size: int, mesh: jax.sharding.Mesh, what: str) -> str | None:
    num_devices = mesh.devices.size
    if global_batch_size % num_devices:
        return (
            f"{what}={global_batch_size} is not divisible by the {num_devices} devices of the "
            "mesh; choose a multiple of the device count."
        )
    return None


def host_to_global(batch, mesh: jax.sharding.Mesh):
    """Assembles each process's local numpy batch into global arrays sharded over 'data'."""
    sharding = data_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
