"""The SIMD lane path of the batch loop (c_backend.runs_in_lanes, templates/_kernels.c.j2).

Compute-bound kernels run SYMJAC_LANES points at once; the last, partial
block repeats its last point in the spare lanes. These tests hold the lane
path to an independent oracle (central differences, the numpy backend) and to the
scalar path: the same source built with one lane (``-DSYMJAC_LANES=1``, so
scalar libm) and with ``vector_math=False``. Each lane computes its point
with the same instructions whatever its position, so a point's values must
not depend on the batch size, on its place in a block, on its neighbours or
on the thread count: those comparisons are exact.
"""

import numpy as np
import pytest

import symjac
from symjac.build import builder as build
from symjac.emit import c_backend, render
from symjac.build import toolchain
from symjac.build.builder import BuildOptions

from oracles import central_difference_jacobian

RNG = np.random.default_rng(2026)
SCALAR_FLAGS = (*BuildOptions.flags, "-DSYMJAC_LANES=1")


def model(x, W, b):
    """Compute-bound: every libm function with a vector version that the
    printer emits, and enough arithmetic per value to run in lanes."""
    h = np.tanh(W @ x + b)
    return np.array([
        np.sum(h[:4] * np.exp(-0.5 * x ** 2)),
        np.sin(x[0] * h[1]) * np.cos(x[1] + h[2]) + np.log(1.0 + h[3] ** 2),
        np.arctan2(x[2], 1.5 + h[0]) + np.sqrt(1.0 + x[3] ** 2) + np.abs(x[0]) ** 1.5,
    ])


SHAPES = dict(x=4, W=(6, 4), b=6)


def points(n):
    return RNG.normal(size=(n, 4)), RNG.normal(size=(6, 4)) / 2, RNG.normal(size=6) / 4


@pytest.fixture(scope="module")
def lanes():
    return symjac.jacobian(model, wrt="x", kernels=("jacobian", "function", "function_and_jacobian"), **SHAPES)


@pytest.fixture(scope="module")
def scalar():
    return symjac.jacobian(model, wrt="x", kernels=("jacobian", "function", "function_and_jacobian"),
                           flags=SCALAR_FLAGS, **SHAPES)


def test_compute_bound_kernels_run_in_lanes_and_memory_bound_ones_do_not(lanes):
    assert "_symjac_jacobian_lanes(" in lanes.source and "#pragma omp simd" in lanes.source
    assert "double tanh(double);" in lanes.source  # its vector version is declared

    def rober(y, k):
        return np.array([-k[0] * y[0] + k[2] * y[1] * y[2], k[0] * y[0] - k[1] * y[1] ** 2, k[1] * y[1] ** 2])

    cheap = symjac.jacobian(rober, wrt="y", y=3, k=3)
    assert "_lanes(" not in cheap.source and "omp declare simd" not in cheap.source


def test_lanes_match_central_differences_and_the_numpy_backend(lanes):
    X, W, b = points(7)
    got = lanes(X, W, b)
    expected = symjac.jacobian(model, wrt="x", backend="numpy", **SHAPES)(X, W, b)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    for i in range(len(X)):
        oracle = central_difference_jacobian(lambda x: model(x, W, b), (X[i],), 0)  # arctan2, abs: no complex step
        np.testing.assert_allclose(got[i], oracle, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["__call__", "values", "function", "function_and_jacobian"])
def test_lanes_equal_the_scalar_path_to_1e_13(lanes, scalar, kind):
    X, W, b = points(203)
    got, expected = getattr(lanes, kind)(X, W, b), getattr(scalar, kind)(X, W, b)
    got, expected = (got, expected) if isinstance(got, tuple) else ((got,), (expected,))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-15)


def test_the_scalar_build_has_one_lane_and_vector_math_off_changes_only_the_key():
    off = symjac.jacobian(model, wrt="x", vector_math=False, **SHAPES)
    on = symjac.jacobian(model, wrt="x", **SHAPES)
    assert off.source == on.source
    assert build.cache_key(off._source, off.options.build_options()) != build.cache_key(on._source, on.options.build_options())
    assert "-DSYMJAC_VECTOR_MATH" not in off.options.build_options().compiler_flags() and "-lmvec" not in off.options.build_options().libraries()
    X, W, b = points(64)
    np.testing.assert_allclose(on(X, W, b), off(X, W, b), rtol=1e-13, atol=1e-15)
    # with scalar libm, lanes compute exactly what the one-lane loop computes
    # (-ffp-contract=off: every operation rounded as written, no FMA fusion)
    one_lane = symjac.jacobian(model, wrt="x", vector_math=False, flags=SCALAR_FLAGS, **SHAPES)
    np.testing.assert_array_equal(off(X, W, b), one_lane(X, W, b))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33])
def test_every_point_is_the_same_whatever_the_batch_size_and_tail(lanes, n):
    X, W, b = points(n)
    batch = lanes(X, W, b)
    assert batch.shape == (n, 3, 4)
    for i in (0, n // 2, n - 1):
        np.testing.assert_array_equal(batch[i], lanes(X[i], W, b))  # the single-point fast path
        np.testing.assert_array_equal(batch[i], lanes(X[i:i + 1], W, b)[0])  # a batch of one


def test_strided_broadcast_and_per_point_parameters_agree_exactly(lanes):
    X, W, b = points(11)
    wide = np.zeros((11, 9))
    wide[:, ::2][:, :4] = X  # a strided view of X
    strided = wide[:, ::2][:, :4]
    assert not strided.flags.c_contiguous
    expected = lanes(X, W, b)
    np.testing.assert_array_equal(lanes(strided, W, b), expected)
    np.testing.assert_array_equal(lanes(X[::-1], W, b)[::-1], expected)
    np.testing.assert_array_equal(lanes(X, np.broadcast_to(W, (11, 6, 4)).copy(), np.tile(b, (11, 1))), expected)


def test_nan_and_inf_stay_in_their_own_point(lanes):
    X, W, b = points(9)
    clean = lanes(X, W, b)
    dirty = X.copy()
    dirty[4, 1] = np.nan
    dirty[6, 0] = np.inf
    got = lanes(dirty, W, b)
    for i in set(range(9)) - {4, 6}:
        np.testing.assert_array_equal(got[i], clean[i])
    assert np.isnan(got[4]).any()
    numpy_jac = symjac.jacobian(model, wrt="x", backend="numpy", **SHAPES)
    with np.errstate(all="ignore"):
        expected = numpy_jac(dirty, W, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-13, atol=1e-15)


def test_threads_change_no_result(lanes):
    X, W, b = points(1001)
    one = lanes(X, W, b, num_threads=1)
    np.testing.assert_array_equal(lanes(X, W, b, num_threads=2), one)
    np.testing.assert_array_equal(lanes(X, W, b, num_threads=3), one)


def scalar_objective(x, k):
    return np.sum(np.tanh(k * x) ** 2 * np.exp(-x[::-1] ** 2)) + np.prod(np.cos(x)) * k[0]


@pytest.mark.parametrize("make", [symjac.hessian, symjac.gradient, symjac.jvp, symjac.vjp])
def test_other_derivative_kinds_run_in_lanes_and_equal_the_scalar_path(make):
    shapes = dict(x=5, k=5)
    lanes, scalar = make(scalar_objective, **shapes), make(scalar_objective, flags=SCALAR_FLAGS, **shapes)
    assert "_lanes(" in lanes.source
    n = 13
    args = [RNG.normal(size=(n, 5)), RNG.normal(size=5)]
    if make is symjac.jvp:
        args.append(RNG.normal(size=(n, 5)))
    if make is symjac.vjp:
        args.append(RNG.normal(size=(n,)))
    for kind in ("__call__", "values") if make is symjac.hessian else ("__call__",):
        got, expected = getattr(lanes, kind)(*args), getattr(scalar, kind)(*args)
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(got[5], getattr(lanes, kind)(*[a[5] if a.ndim > 1 or a.shape == (n,) else a
                                                                      for a in args]))


def test_native_builds_name_the_cpu_in_the_key_and_portable_ones_do_not(lanes, monkeypatch):
    source = lanes._source
    native, portable = BuildOptions(native=True), BuildOptions(native=False)
    assert lanes.options.build_options().native  # the Python API builds for this CPU by default
    assert "-march=native" in native.compiler_flags() and "-march=native" not in portable.compiler_flags()
    keys = build.cache_key(source, native), build.cache_key(source, portable)
    assert keys[0] != keys[1]
    monkeypatch.setattr(toolchain, "host_cpu", lambda: "model name: Another CPU; flags: sse2")
    assert build.cache_key(source, native) != keys[0]  # another CPU never loads this module
    assert build.cache_key(source, portable) == keys[1]  # portable code is shared


def test_codegen_builds_portable_unless_asked(tmp_path, monkeypatch):
    from symjac import codegen

    seen = []
    def compile_module(text, name, workdir, flags, parts, libraries):
        seen.append(flags)
        (workdir / "fake.so").write_bytes(b"")
        return workdir / "fake.so"

    monkeypatch.setattr(codegen, "compile_module", compile_module)
    for native in (False, True):
        codegen.write_module(model, named_shapes=SHAPES, wrt="x", name="m", out_dir=tmp_path, native=native)
    assert "-march=native" not in seen[0] and "-march=native" in seen[1]


def test_the_lane_decision_counts_libm_calls():
    import sympy

    from symjac.emit.simplify import Buffer, Program

    x = sympy.symbols("x0:4")

    def program(exprs):
        return Program("function", (Buffer("_f0", (len(exprs),), tuple(range(len(exprs)))),), (),
                       tuple((0, i, e) for i, e in enumerate(exprs)), 0, None)

    assert not c_backend.runs_in_lanes(program([x[0] * x[1] + x[2]]), argument_elements=4)
    assert c_backend.runs_in_lanes(program([sympy.tanh(x[0]) * sympy.exp(x[1])]), argument_elements=4)


def test_chunked_kernels_run_in_lanes_too(monkeypatch):
    from symjac.emit import simplify

    monkeypatch.setattr(simplify, "CHUNK_THRESHOLD", 10)
    monkeypatch.setattr(simplify, "CHUNK_STATEMENTS", 8)
    chunked = symjac.jacobian(model, wrt="x", **SHAPES)
    parts = "".join(text for _, text in chunked._source.parts)
    assert parts and "#pragma omp simd" in parts and "_t[0][_l]" in parts  # scratch slots per lane
    X, W, b = points(10)
    got = chunked(X, W, b)
    expected = symjac.jacobian(model, wrt="x", backend="numpy", **SHAPES)(X, W, b)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(got[9], chunked(X[9], W, b))
    np.testing.assert_array_equal(chunked(X, W, b, num_threads=2), got)


def robertson(y, k):
    return np.array([-k[0] * y[0] + k[2] * y[1] * y[2],
                     k[0] * y[0] - k[1] * y[1] ** 2 - k[2] * y[1] * y[2],
                     k[1] * y[1] ** 2])


def test_kernels_without_lanes_compute_a_point_alike_wherever_it_falls():
    """One rounding per operation on every path of a kernel without lanes
    too: single-point calls, slices of a batch and thread counts give each
    point's bits exactly. (Robertson's J v has the a*b + c, a*b - c pairs
    that gcc's basic-block vectorizer fused before gcc 14: with gcc 12 a
    quarter of its single-point calls differed from the batch in the last
    bit.)"""
    jvp = symjac.jvp(robertson, y=3, k=3, wrt="y")
    assert "_lanes(" not in jvp.source
    k = np.array([0.04, 3e7, 1e4])
    Y, V = RNG.uniform(0.1, 1.0, (301, 3)), RNG.standard_normal((301, 3))
    batch = jvp(Y, k, V, num_threads=1)
    np.testing.assert_array_equal(np.array([jvp(y, k, v) for y, v in zip(Y, V)]), batch)
    for start, stop in [(0, 3), (5, 6), (7, 300), (1, 301)]:
        np.testing.assert_array_equal(jvp(Y[start:stop], k, V[start:stop], num_threads=1), batch[start:stop])
    np.testing.assert_array_equal(jvp(Y, k, V, num_threads=2), batch)
