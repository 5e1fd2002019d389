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
    files as package data in ``kalmanad/zoo/``.
    """
    here = Path(__file__).resolve().parent.parent  # the kalmanad package
    for candidate in (here / "zoo", here.parent / "models"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise FileNotFoundError(
        f"the model zoo was not found (looked in {here / 'zoo'} and {here.parent / 'models'})"
    )


def list_models() -> list[str]:
    """Names of the zoo's models (sorted), for :func:`load_model`."""
    return sorted(p.stem for p in models_dir().glob("*.toml") if not p.stem.startswith("_"))


def load_model(name_or_path: str | Path) -> ModelSpec:
    """Load a zoo model by name (``"ou"``) or a spec file by path: a TOML spec
    (``"my_model.toml"``) or a model written as equations (``"my_model.kal"``).

    Raises:
        SpecError: unknown name (with suggestions) or an invalid spec;
            :class:`~kalmanad.spec.EquationError` (a SpecError) for a problem in equations.
    """
    text = str(name_or_path)
    path = Path(text)
    is_path = path.suffix in (".toml", ".kal") or path.parent != Path(".")
    if isinstance(name_or_path, Path) or is_path:
        return ModelSpec.from_toml(path)
    zoo = list_models()
    if text not in zoo:
        raise SpecError(
            f"unknown model {text!r}{suggest(text, zoo)}; the zoo has {', '.join(zoo)} "
            "(or give a path to a .toml spec or .kal equations)"
        )
    return ModelSpec.from_toml(models_dir() / f"{text}.toml")
