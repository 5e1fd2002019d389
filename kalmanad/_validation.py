"""Whether a concrete invalid parameter value raises, or becomes a ``-inf`` log-density.

kalmanad checks concrete values eagerly and raises a ``ValueError`` naming the bad one
(a stationary start with an unstable drift, an indefinite covariance, a NaN), while
traced values (inside ``jit``/``grad``) are never checked: the filters map them to a
``-inf`` log-likelihood with finite gradients.

Inside a NumPyro model run the concrete values must behave like traced ones. NumPyro
runs a model eagerly with concrete values (the initial trace of MCMC and SVI, the
``init_to_*`` strategies, ``Predictive``, the ``trace``/``seed``/``substitute``
handlers) and moves on from a ``-inf`` log-density by drawing another start, but not
from an exception. The same holds wherever a log-density is evaluated
(:meth:`kalmanad.distributions.LinearSDEDistribution.log_prob` runs under
:func:`deferred_value_errors`). :func:`value_errors_raise` is the one switch every
concrete value check consults. A user who wants the named error inside a model asks for it
explicitly with ``LinearSDEDistribution(..., validate_args=True)``. NumPyro's global
switch (``numpyro.enable_validation()``) is not taken as that request: recent NumPyro
turns it on by default, and following it would bring the crash back.

This module imports nothing from NumPyro: NumPyro is inspected only when the program
has already imported it (no handler can be active otherwise), so the lowest layers
stay free of it.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator

__all__ = ["deferred_value_errors", "value_errors_raise"]

_DEFERRED = contextvars.ContextVar("kalmanad_deferred_value_errors", default=False)


def _numpyro_handler_active() -> bool:
    """A NumPyro effect handler (``trace``, ``seed``, ``substitute``, ...) is running."""
    primitives = sys.modules.get("numpyro.primitives")
    return bool(getattr(primitives, "_PYRO_STACK", None))


def value_errors_raise() -> bool:
    """Whether a concrete invalid parameter value should raise (True) or be left to
    the log-density, which is ``-inf`` there (False).

    False while a NumPyro effect handler runs (every NumPyro model run goes through
    one) and inside :func:`deferred_value_errors`; True everywhere else, so a model
    built at the top level of a program or a notebook reports the bad value by name.
    """
    return not (_DEFERRED.get() or _numpyro_handler_active())


@contextlib.contextmanager
def deferred_value_errors() -> Iterator[None]:
    """Within the block, invalid concrete parameter values give ``-inf``, not errors."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)
