"""The launch scripts' re-execution with glibc's huge-page tunable."""

import os
import platform
import subprocess
import sys

import pytest

from aulunet_jax import huge_pages


def test_environment_adds_the_tunable_once_and_keeps_others(monkeypatch):
  monkeypatch.setattr(huge_pages, "_transparent_huge_pages_available", lambda: True)
  monkeypatch.setattr(huge_pages.sys, "platform", "linux")
  monkeypatch.setattr(huge_pages.platform, "libc_ver", lambda: ("glibc", "2.36"))
  assert huge_pages.relaunch_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = huge_pages.relaunch_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  # Already set, to either value: nothing to do (=0 is how a user opts out).
  assert huge_pages.relaunch_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
  monkeypatch.setattr(huge_pages, "_transparent_huge_pages_available", lambda: False)
  assert huge_pages.relaunch_environment({}) is None


_SCRIPT = """
import os, sys
print("start", os.getpid(), flush=True)
from aulunet_jax import huge_pages
huge_pages.relaunch_with_huge_pages()
print("running", os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], flush=True)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc")
def test_relaunch_reexecutes_the_same_command_in_the_same_process():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", _SCRIPT, "--flag=x"], env=env, cwd=root, capture_output=True,
                       text=True, check=True).stdout.split("\n")
  if huge_pages.relaunch_environment(env) is None:  # the kernel's transparent huge pages are off
    assert out[:2] == [out[0], out[0].replace("start", "running") + " None ['--flag=x']"]
    return
  pid = out[0].split()[1]
  assert out[:3] == [f"start {pid}", f"start {pid}", f"running {pid} glibc.malloc.hugetlb=1 ['--flag=x']"]


def test_the_launch_scripts_reexecute_before_jax_is_loaded():
  # Importing the package (as the launch scripts do before re-executing)
  # must not load JAX: it would be loaded twice. Its top-level names load it.
  code = ("import sys; import aulunet_jax.huge_pages; before = 'jax' in sys.modules; "
          "import aulunet_jax; aulunet_jax.AULUNet; print(before, 'jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
  assert out.split() == ["False", "True"]
