"""The paths large models take: chunked C kernels, fast CSE, -O1 for chunk files."""

import io

import numpy as np
import pytest

import symjac
from symjac.build import builder as build
from symjac.emit import render
from symjac.emit import simplify
from symjac.build import toolchain
from symjac.api import generate
from symjac.progress import Reporter
from symjac.examples.brusselator import P_DEFAULT, initial_value, jacobian_brusselator, make_brusselator
from symjac.examples.mlp import mlp, random_weights

N = 30
KINDS = ("jacobian", "function", "function_and_jacobian")


def test_chunked_kernel_gives_identical_numbers(monkeypatch):
    f = make_brusselator(N)
    plain = symjac.jacobian(f, u=2 * N, p=3, backend="cython", kernels=KINDS)
    monkeypatch.setattr(simplify, "CHUNK_THRESHOLD", 20)
    monkeypatch.setattr(simplify, "CHUNK_STATEMENTS", 7)
    monkeypatch.setattr(simplify, "CHUNKS_PER_FILE", 3)
    stream = io.StringIO()
    source = generate(f, (), {"u": 2 * N, "p": 3}, wrt=None, backend="cython", kinds=KINDS,
                      reporter=Reporter(stream=stream)).source
    assert "split into" in stream.getvalue()  # the user sees the chunking chosen
    assert len(source.parts) > 3 and all("_chunk" in text for _, text in source.parts)
    chunked = symjac.jacobian(f, u=2 * N, p=3, backend="cython", kernels=KINDS)
    assert chunked.content_hash != plain.content_hash
    rng = np.random.default_rng(3)
    U = initial_value(N) * rng.uniform(0.5, 1.5, size=(4, 2 * N))
    np.testing.assert_array_equal(chunked(U, P_DEFAULT), plain(U, P_DEFAULT))
    np.testing.assert_array_equal(chunked(U, P_DEFAULT, num_threads=2), plain(U, P_DEFAULT))
    np.testing.assert_array_equal(chunked.values(U, P_DEFAULT), plain.values(U, P_DEFAULT))
    for got, want in zip(chunked.function_and_jacobian(U, P_DEFAULT), plain.function_and_jacobian(U, P_DEFAULT)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(chunked(U[0], P_DEFAULT), jacobian_brusselator(U[0], P_DEFAULT), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("model", ["brusselator", "mlp"])
def test_fast_cse_agrees_with_sympy_cse(monkeypatch, model):
    if model == "brusselator":
        f, shapes = make_brusselator(N), (2 * N, 3)
        args = [initial_value(N) + 0.1, P_DEFAULT]
    else:
        f, shapes = mlp, (5, (7, 5), 7, (3, 7), 3)
        args = [np.linspace(-1, 1, 5), *random_weights(5, 7, 3, seed=4)]
    full = symjac.jacobian(f, *shapes, backend="numpy")
    monkeypatch.setattr(simplify, "FULL_CSE_NODES", 0)  # force the one-pass elimination
    fast = symjac.jacobian(f, *shapes, backend="numpy")
    assert fast.source != full.source
    np.testing.assert_allclose(fast(*args), full(*args), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(fast.sparsity, full.sparsity)


def test_fast_cse_shares_repeated_subexpressions_only_once():
    import sympy

    x, y = sympy.symbols("x y", real=True)
    exprs = [sympy.sin(x * y) + x, sympy.sin(x * y) * y, sympy.cos(x)]
    big = simplify.FULL_CSE_NODES
    try:
        simplify.FULL_CSE_NODES = 0
        temporaries, reduced = simplify.eliminate_common_subexpressions(exprs)
    finally:
        simplify.FULL_CSE_NODES = big
    assert [expr for _, expr in temporaries] == [sympy.sin(x * y)]
    (t,) = [symbol for symbol, _ in temporaries]
    # rebuilt unevaluated (cheap): the same expressions, arguments perhaps in another order
    assert [r.func(*r.args) for r in reduced] == [t + x, t * y, sympy.cos(x)]


def test_chunk_files_compile_at_lower_optimisation():
    parts = [("_jacobian_0.c", "x" * 1000)]
    assert toolchain.part_flags(("-O3", "-fopenmp"), parts) == ("-O1", "-fopenmp")
    assert toolchain.part_flags(("-O2", "-march=native"), parts) == ("-O1", "-march=native")
    assert toolchain.part_flags(("-O0",), parts) == ("-O0",)


def test_chunk_files_share_the_operations_evenly_in_a_power_of_two_of_files():
    for weights in ([2000] * 5, [1700] * 5 + [200], [100] * 40, [2000], [500] * 3, [2000] * 20, [3000, 10, 10]):
        files = simplify._group_files(weights)
        assert [run for file in files for run in file] == list(range(len(weights)))  # consecutive, all, once
        assert len(files) & (len(files) - 1) == 0 or len(files) == len(weights)  # a power of two
        assert len(files) >= min(len(weights), max(simplify.MIN_FILES, -(-sum(weights) // simplify.FILE_OPERATIONS)),
                                 simplify.MAX_FILES)
        assert all(len(file) for file in files)
    assert len(simplify._group_files([100] * 40)) == 4  # at most CHUNKS_PER_FILE runs each
    assert len(simplify._group_files([2000] * 100)) == 16  # at most MAX_FILES, while runs allow


def test_progress_reports_every_stage_and_the_chunking(monkeypatch, capsys):
    monkeypatch.setattr(simplify, "CHUNK_THRESHOLD", 20)
    symjac.jacobian(make_brusselator(8), u=16, p=3, backend="numpy", verbose=True)
    err = capsys.readouterr().err
    for stage in ("traced", "differentiated", "simplified", "rendered", "loaded"):
        assert stage in err
    assert "operations" in err and "non-zeros of 16 x 16" in err
