"""Task-sharded meta-training on a `jax.sharding.Mesh` (SPMD, no pmap).

The meta-batch's task axis is sharded over the mesh's 'tasks' axis with
`NamedSharding`; meta-parameters and optimizer state are replicated. The
jitted meta-step is the same function for 1 or N devices: XLA's SPMD
partitioner runs each device's share of the tasks and all-reduces the
meta-gradient.
"""

from typing import Any, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

TASKS = 'tasks'


def initialize(coordinator_address: Optional[str], num_processes: int,
               process_id: int) -> None:
  """`jax.distributed.initialize` for a multi-process run (idempotent).

  `coordinator_address='auto'` lets JAX detect the cluster (TPU pods, SLURM);
  otherwise 'host:port' of process 0 with the process count and this
  process's index. On CPUs the processes exchange data through gloo.
  Call it before any other JAX computation.
  """
  if not coordinator_address or jax.distributed.is_initialized():
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if coordinator_address == 'auto':
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def process_share(meta_batch_size: int) -> tuple[int, int]:
  """(first task, number of tasks) that this process samples of each meta-batch."""
  count = jax.process_count()
  if meta_batch_size % count:
    raise ValueError(f'meta_batch_size={meta_batch_size} does not divide over '
                     f'{count} processes')
  share = meta_batch_size // count
  return jax.process_index() * share, share


def global_batch(mesh: Mesh, local_tasks: Any, meta_batch_size: int) -> Any:
  """The global meta-batch, task axis sharded, from each process's own share."""
  sharding = NamedSharding(mesh, P(TASKS))
  return jax.tree.map(
      lambda v: jax.make_array_from_process_local_data(
          sharding, np.asarray(v), (meta_batch_size,) + v.shape[1:]), local_tasks)


def local_copy(tree: Any) -> Any:
  """A replicated global pytree as ordinary arrays of this process."""
  return jax.tree.map(lambda v: jax.numpy.asarray(np.asarray(v.addressable_data(0))), tree)


def make_mesh(mesh_shape: Optional[Sequence[int]] = None, devices=None) -> Mesh:
  """A mesh whose first axis, 'tasks', shards the meta-batch.

  Args:
    mesh_shape: sizes of the axes ('tasks', then 'model' if given); None or
      empty: every device on the 'tasks' axis.
    devices: the devices (default: `jax.devices()`).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = tuple(mesh_shape) if mesh_shape else (len(devices),)
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f'mesh_shape={",".join(map(str, shape))}: needs '
                     f'{int(np.prod(shape))} devices, there are {len(devices)}')
  names = (TASKS, 'model')[:len(shape)]
  if len(shape) > 2:
    raise ValueError(f'mesh_shape={",".join(map(str, shape))}: at most two axes (tasks, model)')
  return Mesh(np.asarray(devices).reshape(shape), names)


def check_meta_batch(mesh: Mesh, meta_batch_size: int) -> None:
  shards = mesh.shape[TASKS]
  if meta_batch_size % shards:
    raise ValueError(f'meta_batch_size={meta_batch_size} does not divide over the {shards} '
                     f'devices of the mesh\'s tasks axis; use a multiple of {shards}')


def shard_tasks(mesh: Mesh, tasks: Any) -> Any:
  """`tasks` (leading task axis) placed with the task axis sharded over the mesh."""
  check_meta_batch(mesh, jax.tree.leaves(tasks)[0].shape[0])
  return jax.device_put(tasks, NamedSharding(mesh, P(TASKS)))


def replicate(mesh: Mesh, tree: Any) -> Any:
  """`tree` (the same value in every process) replicated on every device of the mesh."""
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), tree)
