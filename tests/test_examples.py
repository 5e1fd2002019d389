"""The example notebooks run, and each is in step with its script.

Every ``examples/NN_name.ipynb`` is executed top to bottom in a fresh kernel with
``KALMANAD_EXAMPLES_QUICK=1`` (fewer draws and smaller data sets: the notebooks read it)
and faster-compiling XLA flags, and the test fails on any cell error. Each notebook's
code cells must equal the cells of its jupytext "percent" script
``examples/NN_name.py``, so the two cannot drift.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kalmanad._xla import with_fast_compile

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("[0-9][0-9]_*.ipynb"))
SCRIPTS = sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))
# Compilation dominates a quick run: the older CPU emitters compile about twice as fast,
# and LLVM at -O0 cuts the rest by about 40% (the programs then run ~4x slower, which
# quick runs do not notice). Test processes only; the notebooks themselves set nothing.
XLA_FLAGS = tuple(
    with_fast_compile(
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    ).split()
)

EXPECTED = [
    "01_quickstart",
    "02_nile",
    "03_sunspots",
    "04_mauna_loa",
    "05_panel_study",
    "06_gradient_rules",
]


def _ids(paths):
    return [p.stem for p in paths]


def test_every_example_has_a_script_and_a_notebook():
    assert _ids(NOTEBOOKS) == EXPECTED
    assert _ids(SCRIPTS) == EXPECTED


def _script_code_cells(path: Path) -> list[str]:
    """Code cells of a jupytext percent script: the text between ``# %%`` markers,
    skipping the YAML header and the markdown cells."""
    text = path.read_text(encoding="utf-8")
    cells = re.split(r"^# %%(.*)$", text, flags=re.MULTILINE)
    out = []
    # cells = [header, marker1, body1, marker2, body2, ...]
    for marker, body in zip(cells[1::2], cells[2::2], strict=True):
        if "[markdown]" in marker or "[md]" in marker:
            continue
        out.append(body.strip("\n"))
    return out


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_notebook_code_equals_script(script):
    notebook = script.with_suffix(".ipynb")
    assert notebook.exists(), f"{notebook.name} is missing: run jupytext --to ipynb {script.name}"
    nb = nbformat.read(notebook, as_version=4)
    nb_code = [c.source.strip("\n") for c in nb.cells if c.cell_type == "code"]
    script_code = _script_code_cells(script)
    assert len(nb_code) == len(script_code), (
        f"{notebook.name} has {len(nb_code)} code cells, {script.name} {len(script_code)}: "
        "regenerate the notebook from the script"
    )
    for i, (a, b) in enumerate(zip(nb_code, script_code, strict=True)):
        assert a.strip() == b.strip(), (
            f"code cell {i} of {notebook.name} differs from {script.name}"
        )


# The default run executes the three quickest notebooks (one per kind: a simulated
# series, a real one, the gradient rules); the slow job runs every notebook.
DEFAULT_NOTEBOOKS = ("01_quickstart", "02_nile", "06_gradient_rules")
NOTEBOOK_CASES = [
    pytest.param(p, id=p.stem, marks=() if p.stem in DEFAULT_NOTEBOOKS else pytest.mark.slow)
    for p in NOTEBOOKS
]


@pytest.mark.parametrize("notebook", NOTEBOOK_CASES)
def test_notebook_runs(notebook, monkeypatch):
    # The kernel is a child process: it inherits this environment.
    monkeypatch.setenv("KALMANAD_EXAMPLES_QUICK", "1")
    flags = os.environ.get("XLA_FLAGS", "").split()
    names = {f.split("=")[0] for f in flags}
    flags += [f for f in XLA_FLAGS if f.split("=")[0] not in names]
    monkeypatch.setenv("XLA_FLAGS", " ".join(flags))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "quick mode" in text, "the notebook does not announce KALMANAD_EXAMPLES_QUICK"
