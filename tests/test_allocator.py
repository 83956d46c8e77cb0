"""The launch scripts' re-execution with a faster allocator (mimalloc, or
glibc's huge-page tunable)."""

import os
import subprocess
import sys

import pytest

from aulunet_jax import allocator

_LINUX_GLIBC = allocator._glibc_linux()


@pytest.fixture
def linux(monkeypatch):
  monkeypatch.setattr(allocator, "_glibc_linux", lambda: True)
  monkeypatch.setattr(allocator, "_transparent_huge_pages_available", lambda: True)


def test_mimalloc_is_preloaded_once_with_a_purge_delay(linux, monkeypatch):
  monkeypatch.setattr(allocator, "mimalloc_library", lambda: "/lib/libmimalloc.so.3")
  env = allocator.relaunch_environment({"A": "1", "LD_PRELOAD": "/x.so"})
  assert env == {"A": "1", "LD_PRELOAD": "/lib/libmimalloc.so.3:/x.so", "MIMALLOC_PURGE_DELAY": "-1"}
  assert allocator.relaunch_environment(env) is None  # the re-executed process does not re-execute
  assert allocator.describe(env) == "mimalloc (MIMALLOC_PURGE_DELAY=-1)"
  # A user's own purge delay is kept.
  env = allocator.relaunch_environment({"MIMALLOC_PURGE_DELAY": "0"})
  assert env == {"LD_PRELOAD": "/lib/libmimalloc.so.3", "MIMALLOC_PURGE_DELAY": "0"}
  # Already in a space-separated preload list (the loader accepts both separators): not added again.
  preloaded = {"LD_PRELOAD": "/x.so /lib/libmimalloc.so.3", "MIMALLOC_PURGE_DELAY": "-1"}
  assert allocator.relaunch_environment(preloaded) is None


def test_huge_pages_without_mimalloc_and_the_opt_outs(linux, monkeypatch):
  monkeypatch.setattr(allocator, "mimalloc_library", lambda: None)
  assert allocator.relaunch_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = allocator.relaunch_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert allocator.describe({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) == \
      "malloc (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)"
  # The tunable already set, to either value: nothing to do (=0 opts out).
  assert allocator.relaunch_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
  assert allocator.relaunch_environment({"AULUNET_JAX_ALLOCATOR": "system"}) is None
  with pytest.raises(ValueError, match="cmeel-mimalloc is not installed"):
    allocator.relaunch_environment({"AULUNET_JAX_ALLOCATOR": "mimalloc"})
  with pytest.raises(ValueError, match="AULUNET_JAX_ALLOCATOR='tcmalloc'"):
    allocator.relaunch_environment({"AULUNET_JAX_ALLOCATOR": "tcmalloc"})
  monkeypatch.setattr(allocator, "_transparent_huge_pages_available", lambda: False)
  assert allocator.relaunch_environment({}) is None


_SCRIPT = """
import os, sys
print("start", os.getpid(), flush=True)
from aulunet_jax import allocator
allocator.relaunch_with_fast_allocator()
with open("/proc/self/maps") as f:
  mimalloc = "libmimalloc" in f.read()
print("running", os.getpid(), mimalloc, sys.argv[1:], flush=True)
"""


@pytest.mark.skipif(not _LINUX_GLIBC, reason="needs Linux with glibc")
def test_relaunch_reexecutes_the_same_command_in_the_same_process_with_mimalloc():
  assert allocator.mimalloc_library(), "cmeel-mimalloc is a dependency on Linux"
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "MIMALLOC_PURGE_DELAY", "AULUNET_JAX_ALLOCATOR")}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", _SCRIPT, "--flag=x"], env=env, cwd=root, capture_output=True,
                       text=True, check=True).stdout.split("\n")
  pid = out[0].split()[1]
  assert out[:3] == [f"start {pid}", f"start {pid}", f"running {pid} True ['--flag=x']"]


def test_the_launch_scripts_reexecute_before_jax_is_loaded():
  # Importing the package (as the launch scripts do before re-executing)
  # must not load JAX: it would be loaded twice. Its top-level names load it.
  code = ("import sys; import aulunet_jax.allocator; before = 'jax' in sys.modules; "
          "import aulunet_jax; aulunet_jax.AULUNet; print(before, 'jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
  assert out.split() == ["False", "True"]
