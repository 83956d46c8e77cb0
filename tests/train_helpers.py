"""Shared by the training tests: running workers in subprocesses with N
forced CPU devices, and a persistent compilation cache shared by all of
them during one test session (runs that compile the same programs, such as
a run and its resumption, then compile once)."""

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CACHE = tempfile.mkdtemp(prefix="aulunet_jax_test_cache_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def env(devices: int = 1):
  e = dict(os.environ)
  e.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
           JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
           PYTHONPATH=ROOT + os.pathsep + e.get("PYTHONPATH", ""))
  return e


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run(args, devices: int = 1, check: bool = True, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
  proc = subprocess.run([sys.executable, *args], cwd=kwargs.pop("cwd", ROOT), env=env(devices), capture_output=True,
                        text=True, timeout=timeout, **kwargs)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


def last_json(stdout: str):
  return json.loads(stdout.strip().splitlines()[-1])
