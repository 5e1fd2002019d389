"""Developer sessions (``pip install nox``; ``nox -s <name>``).

``minimum_versions``: installs kalmanad into a fresh virtual environment with every core
dependency pinned to the lower bound that ``pyproject.toml`` declares (``jax>=0.6.1``
becomes ``jax==0.6.1``; the pins are read from the file, so they cannot drift apart) and
runs a quick subset of the tests: the model, the front end of the filters, the
distribution, NUTS inference and the sharded panel likelihood (``jax.shard_map``).
Extra arguments go to pytest: ``nox -s minimum_versions -- -x``.

The full suite (``python -m pytest``) runs at the newest versions, as in ``.ci/run``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
# The dependencies whose lower bounds are pinned (the others resolve freely).
PINNED = ("jax", "jaxlib", "numpyro", "numpy", "scipy", "arviz", "matplotlib")
QUICK_TESTS = (
    "tests/test_model.py",
    "tests/test_statespace.py",
    "tests/test_distributions.py",
    "tests/test_inference.py",
    "tests/test_scale.py",
)

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False


def _dependencies() -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def minimum_pins(dependencies: list[str]) -> list[str]:
    """``name==floor`` for each of :data:`PINNED` from its ``>=`` bound in ``dependencies``."""
    pins = {}
    for dep in dependencies:
        name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower()
        floor = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", dep)
        if name in PINNED and floor:
            pins[name] = f"{name}=={floor.group(1)}"
    missing = [name for name in PINNED if name not in pins]
    if missing:
        raise ValueError(f"pyproject.toml declares no lower bound for {', '.join(missing)}")
    return [pins[name] for name in PINNED]


@nox.session
def minimum_versions(session: nox.Session) -> None:
    """The quick tests at the declared minimum versions of the core dependencies."""
    pins = minimum_pins(_dependencies())
    constraints = Path(session.create_tmp()) / "minimum.txt"
    constraints.write_text("\n".join(pins) + "\n")
    session.install("-c", str(constraints), "-e", ".", "pytest>=7", "hypothesis>=6")
    session.run(
        "python",
        "-c",
        "import importlib.metadata as m; "
        f"print(', '.join(f'{{p}} {{m.version(p)}}' for p in {PINNED!r}))",
    )
    # (the comparisons with tinygp and statsmodels need those packages: not installed)
    deselect = "not tinygp and not statsmodels"
    session.run("python", "-m", "pytest", "-q", "-k", deselect, *QUICK_TESTS, *session.posargs)
