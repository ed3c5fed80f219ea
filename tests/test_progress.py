"""Progress reports (issue 21): every stage as it starts and ends, compile
progress across chunk files (k of n), a cost estimate before a long compile,
and silence when asked. No timing asserts: the default's two-second delay is
replaced by 0 (report at once) or a very long one (never reached)."""

import io

import numpy as np
import pytest

import symjac
from symjac import progress
from symjac.api import generate
from symjac.build import toolchain
from symjac.emit import simplify
from symjac.examples.brusselator import make_brusselator
from symjac.examples.lorenz import lorenz
from symjac.progress import Reporter

STAGES = ("tracing", "traced", "differentiating", "differentiated", "simplifying", "simplified", "rendering",
          "rendered", "loaded")


def _decoder(h, W):
    return np.tanh(W @ h)


def test_verbose_build_reports_each_stage_as_it_starts_and_ends(capfd):
    symjac.jacobian(lorenz, u=3, p=3, backend="numpy", verbose=True)
    err = capfd.readouterr().err
    assert err.startswith("symjac: building the Jacobian of lorenz\n"), err
    for stage in STAGES:
        assert stage in err, (stage, err)
    assert "  traced " in err and " s  3 outputs, 6 inputs" in err


def test_the_cython_backend_is_reported_as_c():
    stream = io.StringIO()
    generate(lorenz, (), {"u": 3, "p": 3}, wrt=None, backend="cython", reporter=Reporter(stream=stream))
    assert "lines of C" in stream.getvalue() and "cython" not in stream.getvalue(), stream.getvalue()


def test_silenced_builds_print_nothing(capfd, monkeypatch):
    monkeypatch.setattr(progress, "AUTO_DELAY", 0.0)  # the default would report at once...
    symjac.jacobian(lorenz, u=3, p=3, backend="numpy", verbose=False)  # ...but not when verbose=False
    assert capfd.readouterr().err == ""
    monkeypatch.setenv("SYMJAC_QUIET", "1")  # nor under SYMJAC_QUIET
    symjac.jacobian(lorenz, u=3, p=3, backend="numpy")
    symjac.hessian(lambda x: (x ** 3).sum(), x=3, backend="numpy")
    assert capfd.readouterr().err == ""


def test_the_default_reports_a_build_once_it_runs_long(capfd, monkeypatch):
    monkeypatch.setattr(progress, "AUTO_DELAY", 0.0)  # every build counts as long
    symjac.gradient(lambda x: (x ** 3).sum(), x=3, backend="numpy")
    err = capfd.readouterr().err
    assert "symjac: building the gradient of <lambda>" in err and "differentiated" in err, err
    monkeypatch.setattr(progress, "AUTO_DELAY", 1e9)  # no build is long: nothing
    symjac.gradient(lambda x: (x ** 3).sum(), x=3, backend="numpy")
    assert capfd.readouterr().err == ""


def test_held_back_lines_come_out_once_the_report_opens():
    stream = io.StringIO()
    reporter = Reporter(stream=stream, delay=1e9, title="symjac: building the Jacobian of f")
    with reporter.stage("traced") as report:
        report.append("3 outputs")
    assert stream.getvalue() == ""  # a fast build says nothing
    with reporter.stage("compiled"):
        reporter.estimate("  estimate: about 5000 s", seconds=5000.0)  # a long one opens the report
        reporter.progress("compiled C files:", 1, 2)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "symjac: building the Jacobian of f"
    assert lines[1] == "  tracing ..."
    assert lines[2].startswith("  traced ") and lines[2].endswith("3 outputs")
    assert lines[3:6] == ["  compiling ...", "  estimate: about 5000 s", "  compiled C files: 1 of 2"]
    assert lines[6].startswith("  compiled ")


def test_a_terminal_gets_one_updating_line():
    stream = io.StringIO()
    reporter = Reporter(stream=stream, tty=True)
    with reporter.stage("compiled"):
        for done in range(1, 4):
            reporter.progress("compiled C files:", done, 3)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # the end line replaces the updating line
    assert "\r  compiled C files: 2 of 3" in text and "\r  compiled " in text


@pytest.fixture
def chunked(monkeypatch):
    """A Brusselator whose kernels are split into several C files (as in test_scale.py)."""
    monkeypatch.setattr(simplify, "CHUNK_THRESHOLD", 20)
    monkeypatch.setattr(simplify, "CHUNK_STATEMENTS", 7)
    monkeypatch.setattr(simplify, "CHUNKS_PER_FILE", 3)
    source = generate(make_brusselator(6), (), {"u": 12, "p": 3}, wrt=None, backend="cython",
                      kinds=("jacobian",)).source
    assert len(source.parts) >= 3
    return source


def test_a_chunked_compile_reports_k_of_n_files(chunked, tmp_path):
    stream = io.StringIO()
    reporter = Reporter(stream=stream, tty=False)
    with reporter.stage("compiled"):
        toolchain.compile_kernels(chunked.text, "chunked", tmp_path, ("-O0",), chunked.parts)
    err = stream.getvalue()
    n = 1 + len(chunked.parts)
    assert f"  compiled C files: {n} of {n}" in err and f"  compiled C files: 1 of {n}" in err, err


def test_a_long_compile_is_estimated_with_what_would_make_it_faster(chunked, tmp_path, monkeypatch):
    monkeypatch.setattr(toolchain, "SECONDS_PER_MB", {level: 1e6 for level in toolchain.SECONDS_PER_MB})
    stream = io.StringIO()
    reporter = Reporter(stream=stream, delay=1e9)  # the default: held back, unless the estimate is long
    reporter.traced = symjac.trace(_decoder, h=8, W=(16, 8))
    reporter.operations = 12345
    with reporter.stage("compiled"):
        toolchain.compile_kernels(chunked.text, "estimated", tmp_path, ("-O0",), chunked.parts)
    err = stream.getvalue()
    assert "estimate: 12,345 operations" in err and "compiling takes about" in err, err
    assert 'faster: form="array"' in err and "W (16, 8)" in err
