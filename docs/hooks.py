"""MkDocs hooks: pages built from files that live outside ``docs/``.

* **Examples.** Every notebook ``examples/*.ipynb`` becomes a page ``examples/<name>``
  (rendered by mkdocs-jupyter, without executing it) and an entry of the "Examples"
  section of the nav, in file-name order, after a generated index page that lists the
  notebooks with their runnable script versions (``examples/<name>.py``). No notebook
  is named in ``mkdocs.yml``: adding, renaming or removing one needs no edit here.
* **Benchmarks.** The marker ``<!-- kalmanad:benchmark-results -->`` in a page is
  replaced by every markdown table in ``benchmarks/results/`` (``summary.md`` first,
  then the others in name order), each under a heading naming its file; the marker
  ``<!-- kalmanad:benchmark-readme -->`` by ``benchmarks/README.md``. New result files
  appear on the next build without editing a page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results"
BENCH_README = ROOT / "benchmarks" / "README.md"

RESULTS_MARKER = "<!-- kalmanad:benchmark-results -->"
README_MARKER = "<!-- kalmanad:benchmark-readme -->"
NAV_SECTION = "Examples"
INDEX_URI = "examples/index.md"


# ------------------------------------------------------------------------- examples
def notebooks() -> list[Path]:
    """The example notebooks, in file-name order."""
    return sorted(EXAMPLES.glob("*.ipynb"))


def notebook_title(path: Path) -> str:
    """The first level-1 heading of the notebook's markdown cells, else the file name."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        cells = []
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        for line in text.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem.replace("_", " ")


def examples_index() -> str:
    nbs = notebooks()
    lines = [
        "# Examples",
        "",
        "Each example is a Jupyter notebook, shown here with the outputs it was saved",
        "with, and a script with the same code (`python examples/<name>.py`). They live",
        "in the repository's `examples/` folder. The test suite executes every notebook",
        "in a quick mode (`KALMANAD_EXAMPLES_QUICK=1`: fewer draws, smaller data sets),",
        "so a broken example fails CI.",
        "",
    ]
    if nbs:
        lines += ["| notebook | script |", "|:---|:---|"]
        for nb in nbs:
            script = nb.with_suffix(".py")
            script_text = f"`examples/{script.name}`" if script.exists() else "—"
            lines.append(f"| [{notebook_title(nb)}]({nb.name}) | {script_text} |")
        lines.append("")
    others = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.with_suffix(".ipynb").exists())
    if others:
        lines += ["Scripts without a notebook:", ""]
        lines += [f"* `examples/{name}`" for name in others]
        lines.append("")
    return "\n".join(lines)


def _examples_nav() -> list:
    return [INDEX_URI] + [f"examples/{nb.name}" for nb in notebooks()]


def _replace_section(nav: list, title: str, entries: list) -> bool:
    for i, item in enumerate(nav):
        if isinstance(item, dict) and title in item:
            nav[i] = {title: entries}
            return True
    return False


def on_config(config):
    if not _replace_section(config["nav"], NAV_SECTION, _examples_nav()):
        raise ValueError(f"mkdocs.yml nav has no {NAV_SECTION!r} section for the examples")
    for path in (EXAMPLES, RESULTS, BENCH_README):
        if path.exists():
            config["watch"].append(str(path))
    return config


def _repo_file(src_uri: str, config) -> File:
    """A site file read from the repository (``src_uri`` relative to its root)."""
    return File(
        src_uri,
        src_dir=str(ROOT),
        dest_dir=config["site_dir"],
        use_directory_urls=config["use_directory_urls"],
    )


def result_assets() -> list[Path]:
    """Files in ``benchmarks/results/`` published next to the tables (JSON, figures)."""
    if not RESULTS.is_dir():
        return []
    return sorted(p for p in RESULTS.iterdir() if p.is_file() and p.suffix != ".md")


@event_priority(100)  # before mkdocs-jupyter, which turns .ipynb files into pages
def on_files(files, config):
    files.append(File.generated(config, INDEX_URI, content=examples_index()))
    # The raw results (JSON, any figure a table refers to) are published as they are.
    for path in result_assets():
        files.append(_repo_file(f"benchmarks/results/{path.name}", config))
    for nb in notebooks():
        # A real source directory (the repository root), not File.generated(abs_src_path=):
        # mkdocs-jupyter's wrapper derives the source path from src_dir and src_uri.
        files.append(_repo_file(f"examples/{nb.name}", config))
    return files


# ----------------------------------------------------------------------- benchmarks
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _demote(markdown: str, levels: int) -> str:
    """Shift every ATX heading down ``levels`` levels (outside fenced code)."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def _rewrite_links(markdown: str, base: str, published: Path | None = None) -> str:
    """Relative links of an included file, made valid on the page that includes it.

    A link or image whose target is a file directly in ``published``
    (``benchmarks/results/``, whose top-level files the site publishes under ``results/``
    next to the benchmarks page) points there; any other link to a repository file
    becomes a code span naming it (``base`` + target), since the site does not contain
    it. Web links stay.
    """

    def repl(m):
        bang, text, target = m.group(1), m.group(2), m.group(3)
        if re.match(r"[a-z]+://|#|mailto:", target):
            return m.group(0)
        if published is not None and "/" not in target and (published / target).is_file():
            return f"{bang}[{text}](results/{target})"
        if text.strip("`") == target or not text:
            return f"`{base}{target}`"
        return f"{text} (`{base}{target}`)"

    return _LINK.sub(repl, markdown)


def _strip_title(markdown: str) -> tuple[str, str]:
    """``(title, rest)``: the first level-1 heading and the text after it."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return line[2:].strip(), "\n".join(lines[i + 1 :])
    return "", markdown


def results_markdown() -> str:
    tables = sorted(RESULTS.glob("*.md"), key=lambda p: (p.name != "summary.md", p.name))
    parts = []
    for path in tables:
        title, body = _strip_title(path.read_text(encoding="utf-8"))
        parts.append(f"## {title or path.stem}\n\n*From `benchmarks/results/{path.name}`.*\n")
        parts.append(_rewrite_links(_demote(body.strip(), 1), "benchmarks/results/", RESULTS))
        parts.append("")
    with_tables = {p.stem for p in tables}
    raw = [p.name for p in RESULTS.glob("*.json") if p.stem not in with_tables]
    if raw:
        parts.append("## Results without a table\n")
        parts.append(
            "These runs saved JSON only (no markdown table); their numbers are quoted in "
            "[How the benchmarks are run](notes.md):\n"
        )
        parts += [f"* [`benchmarks/results/{name}`](results/{name})" for name in sorted(raw)]
        parts.append("")
    assets = [p.name for p in result_assets()]
    if assets:
        parts.append("## Raw result files\n")
        parts.append("Every file of `benchmarks/results/` as the scripts wrote it:\n")
        parts.append(", ".join(f"[`{name}`](results/{name})" for name in assets))
        parts.append("")
    if not tables and not raw:
        parts.append("No result files are present in `benchmarks/results/` in this build.")
    return "\n".join(parts)


def readme_markdown() -> str:
    _, body = _strip_title(BENCH_README.read_text(encoding="utf-8"))
    return _rewrite_links(body.strip(), "benchmarks/")


def on_page_markdown(markdown, page, config, files):
    if RESULTS_MARKER in markdown:
        markdown = markdown.replace(RESULTS_MARKER, results_markdown())
    if README_MARKER in markdown:
        markdown = markdown.replace(README_MARKER, readme_markdown())
    return markdown
