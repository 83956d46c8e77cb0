"""The memory allocator behind XLA's CPU buffers.

XLA's CPU runtime allocates each execution's buffers with malloc: at batch 8,
256x256, one 45 MB block per inference batch, more per training step. glibc
hands blocks that large back to the kernel when they are freed (its mmap
threshold cannot be raised past 32 MiB), so every step faults its memory in
again and the kernel zeroes it. Measured on a 2-core EPYC, system time and
median wall time per step:

  glibc malloc                    ~150 ms (87,000 faults)   training 275 ms
  glibc, glibc.malloc.hugetlb=1   45-67 ms                  training 205-260 ms
                                  10-16 ms                  inference 44-47 ms
  mimalloc, never purging         1-3 ms                    training 180-183 ms
                                  1-2 ms                    inference 41-42 ms

mimalloc (the ``cmeel-mimalloc`` wheel, a dependency on Linux) keeps freed
memory for reuse. With ``MIMALLOC_PURGE_DELAY=-1`` it never returns it to the
kernel, so a process's resident memory stays at its peak; with a purge delay
(mimalloc's default, or 1000 ms) some runs spent 180-200 ms of system time
per training step returning and re-faulting memory.

A process's allocator is fixed when it starts, so the launch scripts call
``relaunch_with_fast_allocator()`` first: it re-executes the same command
line (same process id) with the allocator's environment, once.
``AULUNET_JAX_ALLOCATOR`` chooses: ``mimalloc`` (``LD_PRELOAD``, and
``MIMALLOC_PURGE_DELAY=-1`` unless set), ``hugetlb`` (glibc's
transparent-huge-page tunable, the fallback where mimalloc is not
installed), or ``system`` (leave the process alone); unset, the first of
them available. Library users can set the same variables themselves.
"""

import importlib.metadata
import os
import platform
import sys
from typing import Mapping, Optional

VARIABLE = "AULUNET_JAX_ALLOCATOR"
CHOICES = ("mimalloc", "hugetlb", "system")
TUNABLE = "glibc.malloc.hugetlb"
PURGE_DELAY_MS = "-1"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_linux() -> bool:
  return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def _transparent_huge_pages_available() -> bool:
  try:
    with open(_THP_SETTING) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def mimalloc_library() -> Optional[str]:
  """Path of the installed mimalloc shared library, or None."""
  try:
    files = importlib.metadata.files("cmeel-mimalloc") or []
  except importlib.metadata.PackageNotFoundError:
    return None
  paths = sorted(str(f.locate()) for f in files if f.name.startswith("libmimalloc.so"))
  return next((p for p in paths if os.path.exists(p)), None)


def _choice(environ: Mapping[str, str], library: Optional[str]) -> str:
  wanted = environ.get(VARIABLE, "")
  if wanted and wanted not in CHOICES:
    raise ValueError(f"{VARIABLE}={wanted!r}: choose one of {', '.join(CHOICES)}")
  if not _glibc_linux():
    return "system"
  if wanted == "mimalloc" and library is None:
    raise ValueError(f"{VARIABLE}=mimalloc, but cmeel-mimalloc is not installed (pip install cmeel-mimalloc)")
  if wanted:
    return wanted
  if library:
    return "mimalloc"
  return "hugetlb" if _transparent_huge_pages_available() else "system"


def relaunch_environment(environ: Optional[Mapping[str, str]] = None):
  """The environment to re-execute with, or None when the process already
  runs with the chosen allocator (or cannot change it)."""
  environ = dict(os.environ if environ is None else environ)
  library = mimalloc_library()
  choice = _choice(environ, library)
  env = dict(environ)
  if choice == "mimalloc":
    preload = environ.get("LD_PRELOAD", "")
    if library not in preload.replace(":", " ").split():  # the loader takes either separator
      env["LD_PRELOAD"] = ":".join(p for p in (library, preload) if p)
    env.setdefault("MIMALLOC_PURGE_DELAY", PURGE_DELAY_MS)
  elif choice == "hugetlb":
    tunables = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE not in tunables:  # set to either value already: =0 is how a user opts out
      env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, f"{TUNABLE}=1") if t)
  return None if env == environ else env


def describe(environ: Optional[Mapping[str, str]] = None) -> str:
  """The allocator this process runs with, in words (for reports)."""
  environ = os.environ if environ is None else environ
  if "libmimalloc" in environ.get("LD_PRELOAD", ""):
    return f"mimalloc (MIMALLOC_PURGE_DELAY={environ.get('MIMALLOC_PURGE_DELAY', 'default')})"
  return f"malloc (GLIBC_TUNABLES={environ.get('GLIBC_TUNABLES', '')})"


def relaunch_with_fast_allocator() -> None:
  """Re-executes this process's command line with the allocator's
  environment (see the module docstring); returns only when that is not
  needed."""
  env = relaunch_environment()
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
