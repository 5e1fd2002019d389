"""The documentation site: it builds strictly, and its code blocks are valid.

* ``mkdocs build --strict`` (broken links and anchors are warnings, hence failures;
  ``mkdocs.yml``) into a temporary folder, with whatever example notebooks and benchmark
  results exist, and checks that the generated pages picked them all up.
* Every ``python``/``py`` block of ``docs/**/*.md`` parses, every ``toml`` block is
  valid TOML; the README's set-up commands are on the getting-started page verbatim;
  every zoo model is in the models table.
* Slow (opt-in, ``-m slow``): the ``python`` blocks run, page by page in one fresh
  interpreter per page (``py`` blocks are long NUTS runs: parsed only).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kalmanad._xla import with_fast_compile

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


def blocks(path: Path, langs: tuple[str, ...]) -> list[tuple[int, str]]:
    """``(line, code)`` of the fenced blocks of the given languages in a page."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang") in langs:
            line = text.count("\n", 0, m.start()) + 2
            out.append((line, textwrap.dedent(m.group("body"))))
    return out


def page_id(path: Path) -> str:
    return str(path.relative_to(DOCS))


def _env() -> dict:
    env = dict(os.environ)
    env["NO_MKDOCS_2_WARNING"] = "1"
    fast = with_fast_compile(env.get("XLA_FLAGS"))
    if fast:
        env["XLA_FLAGS"] = fast
    return env


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("mkdocs_jupyter")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]

    for page in ("index.html", "api/kalmanad/index.html", "concepts/gradients/index.html"):
        assert (site / page).is_file(), page
    # Every example notebook has a page and is listed on the examples index.
    index = (site / "examples" / "index.html").read_text(encoding="utf-8")
    for nb in sorted((ROOT / "examples").glob("*.ipynb")):
        assert (site / "examples" / nb.stem / "index.html").is_file(), nb.name
        assert f'href="{nb.stem}/"' in index, nb.name
    # Every benchmark result table is on the benchmarks page.
    bench = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    for md in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        assert f"benchmarks/results/{md.name}" in bench, md.name
    assert "kalmanad:benchmark" not in bench
    # The API reference rendered the docstrings (a cross-check on the griffe extension).
    api = (site / "api" / "kalmanad" / "index.html").read_text(encoding="utf-8")
    assert "kalman_filter" in api and ":class:`" not in api
    # No TeX left unrendered on the written pages (e.g. display maths in a list item
    # without 4-space indentation, or maths in a heading, which the navigation shows raw);
    # the API and benchmark pages are generated from other files and may show a "$".
    for page in PAGES:
        html_file = site / page.relative_to(DOCS).with_suffix("") / "index.html"
        if page.name == "index.md":
            html_file = site / page.relative_to(DOCS).parent / "index.html"
        if page.parent.name in ("api", "benchmarks") or not html_file.is_file():
            continue
        leftover = raw_tex(html_file.read_text(encoding="utf-8"))
        assert not leftover, f"{page_id(page)}: unrendered TeX near {leftover[:3]}"


def raw_tex(html: str) -> list[str]:
    """Snippets of TeX delimiters outside rendered maths, code and scripts."""
    for pattern in (
        r"<script.*?</script>",
        r'<(div|span) class="arithmatex">.*?</\1>',
        r"<code.*?</code>",
        r"<pre.*?</pre>",
    ):
        html = re.sub(pattern, "", html, flags=re.S)
    text = re.sub(r"<[^>]+>", "", html)
    return [text[max(0, m.start() - 30) : m.end() + 30] for m in re.finditer(r"\$|\\\(|\\\[", text)]


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_code_blocks_are_valid(path):
    for line, code in blocks(path, ("python", "py")):
        try:
            ast.parse(code)
        except SyntaxError as e:
            pytest.fail(f"{page_id(path)}:{line + (e.lineno or 1) - 1}: {e.msg}")
    for line, code in blocks(path, ("toml",)):
        try:
            tomllib.loads(code)
        except tomllib.TOMLDecodeError as e:
            pytest.fail(f"{page_id(path)}:{line}: invalid TOML: {e}")


def test_readme_setup_commands_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.startswith("pip install -e")]
    assert len(commands) == 2
    for command in commands:
        assert command in page, command


def test_every_zoo_model_is_in_the_models_table():
    zoo = sorted(p.stem for p in (ROOT / "models").glob("*.toml") if not p.stem.startswith("_"))
    table = (DOCS / "guide" / "models.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert sorted(listed) == zoo


RUNNABLE = [p for p in PAGES if blocks(p, ("python",))]


@pytest.mark.slow
@pytest.mark.parametrize("path", RUNNABLE, ids=page_id)
def test_python_blocks_run(path, tmp_path):
    script = "\n\n".join(
        f"# --- {page_id(path)}, line {line}\n{code}" for line, code in blocks(path, ("python",))
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kalmanad_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hooks_rewrite_included_links(tmp_path):
    pytest.importorskip("mkdocs")
    hooks = _hooks()
    (tmp_path / "fig.png").write_bytes(b"")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("")
    text = (
        "![a plot](fig.png) [data](run.json) [web](https://x.org) [`README.md`](README.md) "
        "[log](logs/a.log)"
    )
    out = hooks._rewrite_links(text, "benchmarks/", tmp_path)
    assert out == (
        "![a plot](results/fig.png) data (`benchmarks/run.json`) [web](https://x.org) "
        "`benchmarks/README.md` log (`benchmarks/logs/a.log`)"
    )
    assert hooks._demote("# a\n```\n# not a heading\n```\n## b", 1) == (
        "## a\n```\n# not a heading\n```\n### b"
    )


def _static_all(module_file: Path) -> list[str]:
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return []


def test_every_public_name_has_an_api_entry():
    """Each name of ``kalmanad.__all__`` is rendered on an API page (a ``:::`` entry, a
    ``members:`` item, or a member of a module page rendered whole)."""
    documented: set[str] = set()
    for page in sorted((DOCS / "api").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"^::: ([\w.]+)", text, re.M):
            documented.add(target.rsplit(".", 1)[-1])
            module = ROOT / Path(*target.split("."))
            entry = re.escape(target)
            no_members = re.search(rf"^::: {entry}\n(?:    .*\n)*?      members: false", text, re.M)
            if module.with_suffix(".py").is_file() and not no_members:
                documented.update(_static_all(module.with_suffix(".py")))
        documented.update(re.findall(r"^        - (\w+)$", text, re.M))
    missing = [x for x in _static_all(ROOT / "kalmanad" / "__init__.py") if x not in documented]
    assert not missing, f"not in the API reference (docs/api/*.md): {missing}"
