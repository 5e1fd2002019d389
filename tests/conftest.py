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

import importlib.metadata
import os
import subprocess
import sys

_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _xla_knows(flag: str) -> bool:
    """Whether this jaxlib's XLA accepts ``flag``: an unknown flag in XLA_FLAGS ends the
    process at backend start-up (exit 1, seen with jaxlib 0.11.2, which dropped this
    one). jaxlib < 0.11 has it; a newer one is asked in a subprocess (about 2 s)."""
    try:
        version = tuple(int(x) for x in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        version = None
    if version is not None and version < (0, 11):
        return True
    env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    probe = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True)
    return run.returncode == 0


if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", "") and _xla_knows(_FLAG):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

os.environ.setdefault("KALMANAD_CACHE_DIR", "off")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
