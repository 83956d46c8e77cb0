"""Starting JAX across processes (one machine to a cluster).

Each process runs the same program on its own devices; ``jax.pmap`` then
spans the devices of all processes, and collectives (``lax.pmean``) cross
process boundaries. GPUs and TPUs use their platform's collectives; the CPU
backend needs gloo for them, which ``initialize`` selects (the setting only
concerns the CPU backend, so it is harmless on accelerators).
"""

from typing import Optional

import jax


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Joins this process to a multi-process JAX run; does nothing for a
  single-process run (no coordinator and at most one process).

  Must run before JAX touches a device. On a cluster whose scheduler JAX
  recognises (Slurm, Open MPI, TPU pods) the arguments may be left out there
  and come from the environment; otherwise all three are needed, e.g.
  ``initialize('10.0.0.1:1234', 2, 0)`` on the first machine and
  ``initialize('10.0.0.1:1234', 2, 1)`` on the second.
  """
  if coordinator_address is None and (num_processes or 1) <= 1:
    return
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id {process_id} is not in [0, {num_processes})")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
