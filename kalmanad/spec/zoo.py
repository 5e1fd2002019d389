"""The model zoo: the bundled spec files, by name."""

from __future__ import annotations

from pathlib import Path

from kalmanad.spec.errors import SpecError, suggest
from kalmanad.spec.model import ModelSpec

__all__ = ["list_models", "load_model", "models_dir"]


def models_dir() -> Path:
    """The folder of the model zoo.

    In a source checkout (or an editable install) this is the repository's top-level
    ``models/`` next to the ``kalmanad`` package; an installed wheel ships the same
    files as package data in ``kalmanad/models/``.
    """
    here = Path(__file__).resolve().parent.parent  # the kalmanad package
    for candidate in (here / "models", here.parent / "models"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise FileNotFoundError(
        f"the model zoo was not found (looked in {here / 'models'} and {here.parent / 'models'})"
    )


def list_models() -> list[str]:
    """Names of the zoo's models (sorted), for :func:`load_model`."""
    return sorted(p.stem for p in models_dir().glob("*.toml") if not p.stem.startswith("_"))


def load_model(name_or_path: str | Path) -> ModelSpec:
    """Load a zoo model by name (``"ou"``) or a spec file by path (``"my_model.toml"``).

    Raises:
        SpecError: unknown name (with suggestions) or an invalid spec.
    """
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or path.suffix == ".toml" or path.parent != Path("."):
        return ModelSpec.from_toml(path)
    zoo = list_models()
    if text not in zoo:
        raise SpecError(
            f"unknown model {text!r}{suggest(text, zoo)}; the zoo has {', '.join(zoo)} "
            "(or give a path to a .toml spec)"
        )
    return ModelSpec.from_toml(models_dir() / f"{text}.toml")
