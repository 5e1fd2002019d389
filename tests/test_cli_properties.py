"""Property tests: mangled specs and CSVs never end in a traceback.

Each example takes a valid OU spec or data file, breaks it in one of the ways a user
does (a misspelt name, a reversed or negative prior argument, an unstable constant
drift, a negative-support prior on a standard deviation, a truncated file; a
non-numeric cell, a decreasing or missing time, a renamed column, a ragged row), and
runs the spec loader and ``kalmanad fit`` in this process. Both must fail at load
time: the loader with a :class:`SpecError` or :class:`DataError`, the command with
exit status 2 and one line on stderr that names the file and the problem, and nothing
written. No example samples: every input is invalid before NUTS starts.
"""

from __future__ import annotations

import contextlib
import io
import keyword
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalmanad.cli import main
from kalmanad.spec import DataError, SpecError, load_model

SETTINGS = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

OU_SPEC = {
    "model": '[model]\nlatent = ["x"]\nmanifest = ["y"]\n',
    "parameters": (
        '[parameters]\ntheta = "LogNormal(0, 1)"\nmu = "Normal(0, 5)"\n'
        'sigma = "HalfNormal(2)"\nnoise = "HalfNormal(1)"\n'
    ),
    "dynamics": (
        '[dynamics]\ndrift = [["-theta"]]\nintercept = ["theta * mu"]\n'
        'diffusion = [["2 * theta * sigma^2"]]\n'
    ),
    "measurement": '[measurement]\nloadings = [[1]]\nnoise_sd = [["noise"]]\n',
}

OU_ROWS = [(0.0, 1.2), (0.5, 0.7), (1.25, 1.9), (2.0, ""), (3.5, 2.4), (4.0, 2.2)]

KNOWN_NAMES = {"theta", "mu", "sigma", "noise", "x", "y", "pi"}

# Identifiers a user may type by mistake (never one the spec knows, a function or a
# Python keyword).
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: (
        s not in KNOWN_NAMES
        and s
        not in {
            "exp",
            "log",
            "log1p",
            "expm1",
            "sqrt",
            "square",
            "abs",
            "sin",
            "cos",
            "tanh",
            "softplus",
            "sigmoid",
            "logit",
            "min",
            "max",
        }
        and not keyword.iskeyword(s)
    )
)
positive = st.floats(min_value=0.01, max_value=100.0, allow_nan=False).map(lambda v: round(v, 2))


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text.strip().lower() not in {"", "na", "nan", "n/a", "null", "none", "."}
    return False


# Cell text that is not a number and not a missing-value marker. No comma, quote or
# line break (they would change the row's shape, another mangling) and no '#' (a
# comment line).
garbage = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=',"#\r\n\x85'
    ),
    min_size=1,
    max_size=8,
).filter(_not_a_number)


def _spec_text(sections: dict) -> str:
    return "\n".join(sections.values())


@st.composite
def mangled_specs(draw):
    """(spec text, fragments the error must contain)."""
    s = dict(OU_SPEC)
    kind = draw(
        st.sampled_from(
            [
                "misspelt",
                "negative_scale",
                "reversed_bounds",
                "unknown_key",
                "unstable_constant_drift",
                "negative_sd",
                "truncated",
            ]
        )
    )
    if kind == "misspelt":
        name = draw(names)
        s["dynamics"] = s["dynamics"].replace('[["-theta"]]', f'[["-{name}"]]')
        return _spec_text(s), ["[dynamics] drift[0][0]", f"unknown parameter '{name}'"]
    if kind == "negative_scale":
        value = draw(positive)
        prior = draw(st.sampled_from(["HalfNormal", "Exponential", "HalfCauchy"]))
        s["parameters"] = s["parameters"].replace('"HalfNormal(2)"', f'"{prior}(-{value})"')
        return _spec_text(s), ["[parameters] sigma", "must be positive", f"{prior}(-{value})"]
    if kind == "reversed_bounds":
        low = draw(positive)
        high = draw(st.floats(min_value=-100, max_value=low, allow_nan=False).map(math.floor))
        s["parameters"] = s["parameters"].replace('"LogNormal(0, 1)"', f'"Uniform({low}, {high})"')
        return _spec_text(s), ["[parameters] theta", "lower bound", "below the upper bound"]
    if kind == "unknown_key":
        key = draw(names.filter(lambda n: n not in {"drift", "intercept", "diffusion"}))
        s["dynamics"] += f"{key} = 1\n"
        return _spec_text(s), ["[dynamics]", f"unknown key '{key}'"]
    if kind == "unstable_constant_drift":
        rate = draw(st.floats(min_value=0.0, max_value=50.0, allow_nan=False).map(round))
        s["dynamics"] = (
            f'[dynamics]\ndrift = [[{rate}]]\nintercept = ["mu"]\ndiffusion = [["sigma^2"]]\n'
        )
        s["parameters"] = s["parameters"].replace('theta = "LogNormal(0, 1)"\n', "")
        return _spec_text(s), ["[dynamics] drift", "not stable", "diffuse"]
    if kind == "negative_sd":
        prior = draw(st.sampled_from(["Normal(0, 1)", "Cauchy(0, 2)", "StudentT(3, 0, 1)"]))
        s["parameters"] = s["parameters"].replace('noise = "HalfNormal(1)"', f'noise = "{prior}"')
        return _spec_text(s), ["[measurement] noise_sd[0][0]", "can be negative", "noise"]
    text = _spec_text(s)
    # Cut inside the matrices or before them: a required key or section goes missing,
    # or the TOML no longer parses. Only the file name is certain to be in the message.
    cut = draw(st.integers(min_value=1, max_value=text.index("[measurement]") + 20))
    return text[:cut], []


def _csv_text(rows, header=("time", "y")) -> str:
    return ",".join(header) + "\n" + "".join(f"{t},{y}\n" for t, y in rows)


@st.composite
def mangled_csvs(draw):
    """(CSV text, fragments the error must contain)."""
    rows = [list(r) for r in OU_ROWS]
    k = draw(st.integers(min_value=1, max_value=len(rows) - 1))
    line = k + 2  # header is line 1
    kind = draw(
        st.sampled_from(
            ["non_numeric", "decreasing", "missing_time", "renamed", "ragged", "duplicate"]
        )
    )
    if kind == "non_numeric":
        column = draw(st.sampled_from([0, 1]))
        text = draw(garbage)
        rows[k][column] = text
        name = ("time", "y")[column]
        return _csv_text(rows), [f"line {line}, column '{name}'", "not a number"]
    if kind == "decreasing":
        rows[k][0] = rows[k - 1][0] - draw(positive)
        return _csv_text(rows), [f"line {line}: time", "is before", "sort the rows"]
    if kind == "missing_time":
        rows[k][0] = draw(st.sampled_from(["", "NA", "nan", "NaN", "null"]))
        return _csv_text(rows), [f"line {line}, column 'time': missing value"]
    if kind == "renamed":
        name = draw(names.filter(lambda n: n != "time"))
        return _csv_text(rows, header=("time", name)), ["missing column(s) 'y'", name]
    if kind == "ragged":
        extra = draw(st.integers(min_value=1, max_value=3))
        body = _csv_text(rows).splitlines()
        body[line - 1] += ",1" * extra
        return "\n".join(body) + "\n", [f"line {line} has {2 + extra} fields"]
    return _csv_text(rows, header=("time", "y", "y")), ["duplicate column(s) 'y'"]


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def _fit_argv(model, data, out):
    # Tiny settings: were an input ever accepted, the run would end in seconds (and
    # fail the test) instead of sampling for minutes.
    files = [str(model), str(data), "--out", str(out)]
    tiny = ["--draws", "1", "--warmup", "0", "--chains", "1", "--no-progress", "--no-plot"]
    return ["fit", *files, *tiny]


def _assert_one_line_error(status, err, fragments):
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kalmanad: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@SETTINGS
@given(case=mangled_specs())
def test_mangled_specs_are_named_one_line_errors(case):
    text, fragments = case
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        spec = folder / "mangled.toml"
        spec.write_text(text)
        data = folder / "data.csv"
        data.write_text(_csv_text(OU_ROWS))
        with pytest.raises(SpecError) as info:
            load_model(spec)
        message = str(info.value)
        assert "\n" not in message and message.startswith(str(spec))
        for f in fragments:
            assert f in message, (f, message)
        status, _, err = _run(_fit_argv(spec, data, folder / "out"))
        _assert_one_line_error(status, err, [str(spec), *fragments])
        assert sorted(p.name for p in folder.iterdir()) == ["data.csv", "mangled.toml"]


@SETTINGS
@given(case=mangled_csvs())
def test_mangled_csvs_are_named_one_line_errors(case):
    text, fragments = case
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = folder / "mangled.csv"
        data.write_text(text, encoding="utf-8")
        with pytest.raises(DataError) as info:
            load_model("ou").read_data(data)
        message = str(info.value)
        assert "\n" not in message and message.startswith(str(data))
        for f in fragments:
            assert f in message, (f, message)
        status, _, err = _run(_fit_argv("ou", data, folder / "out"))
        _assert_one_line_error(status, err, [str(data), *fragments])
        assert [p.name for p in folder.iterdir()] == ["mangled.csv"]


def test_the_unmangled_inputs_load():
    """The strategies' starting points are valid: each mangling is what fails."""
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "ou.toml"
        spec.write_text(_spec_text(OU_SPEC))
        data = Path(folder) / "data.csv"
        data.write_text(_csv_text(OU_ROWS))
        loaded = load_model(spec)
        assert loaded.parameters == ("theta", "mu", "sigma", "noise")
        assert loaded.read_data(data).times.shape == (len(OU_ROWS),)
