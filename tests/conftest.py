"""Test configuration.

* The tests run in float64 (the library itself never flips this flag; float32 tests
  ask for float32 arrays explicitly).
* XLA's CPU fusion emitters are switched off for the test processes only: the test
  suite compiles hundreds of small programs once each, and the older emitters compile
  them about twice as fast (at a few per cent of run time, which tests do not measure).
  Set by environment before the backend starts, only where this XLA knows the flag; a
  user's own XLA_FLAGS are kept.
* The ``kalmanad`` command's on-disk compilation cache is off for the commands the
  tests run (they stay independent of earlier runs), except where a test names a
  cache directory itself.
"""

import os

from kalmanad._xla import with_fast_compile  # imports JAX, but does not start it

_flags = with_fast_compile(os.environ.get("XLA_FLAGS"))
if _flags:
    os.environ["XLA_FLAGS"] = _flags

os.environ.setdefault("KALMANAD_CACHE_DIR", "off")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
