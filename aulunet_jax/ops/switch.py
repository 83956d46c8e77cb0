"""Switch between the fast and the plain (reference) op implementations.

The choice is read when a function is traced, so it affects what is compiled
inside the ``with`` block, not functions jit-compiled before it.
"""

import contextlib
import threading

_state = threading.local()


def using_reference() -> bool:
  return getattr(_state, "reference", False)


@contextlib.contextmanager
def reference_ops(enabled: bool = True):
  previous = using_reference()
  _state.reference = enabled
  try:
    yield
  finally:
    _state.reference = previous
