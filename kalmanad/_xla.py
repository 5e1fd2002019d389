"""XLA flags that the ``kalmanad`` command and the test suite set for themselves.

The library never sets any. These helpers only build strings; nothing here imports JAX,
so they can run before JAX's backend starts (XLA reads ``XLA_FLAGS`` once, then).
"""

from __future__ import annotations

import importlib.metadata

#: XLA:CPU's older fusion emitters compile about twice as fast (a short fit's wall time
#: is mostly compilation), at 10-20% more run time.
CPU_FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"


def _jaxlib_version() -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def fast_compile_known() -> bool:
    """Whether this jaxlib's XLA accepts :data:`CPU_FAST_COMPILE`.

    jaxlib 0.11.2 dropped the option, and XLA ends a process whose ``XLA_FLAGS`` name an
    unknown option (exit status 1, no message): so only jaxlib < 0.11, where it exists.
    """
    version = _jaxlib_version()
    return version is not None and version < (0, 11)


def with_fast_compile(flags: str | None) -> str:
    """``flags`` plus :data:`CPU_FAST_COMPILE`, unless they name that option already or
    this jaxlib does not know it."""
    flags = (flags or "").strip()
    name = CPU_FAST_COMPILE.split("=")[0]
    if name in flags or not fast_compile_known():
        return flags
    return f"{flags} {CPU_FAST_COMPILE}".strip()
