"""Trust (issue 6): bad input, concurrent use, corrupted caches and hostile
names never crash, corrupt memory or execute code.

Compiled Jacobians built here (each once per module, shared through the run's
build cache with the other test modules): ``lorenz`` (also compiled by
test_build.py and test_properties.py with the same source) and ``heavy`` (a
kernel slow enough per point to observe the GIL being released). The cache
tests compile ``lorenz`` again in private cache directories, in subprocesses.
Anything that could crash the interpreter runs in a subprocess, so that a
segfault is a failed test, not a dead pytest.
"""

from __future__ import annotations

import gc
import inspect
import json
import keyword
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import unicodedata
from pathlib import Path

import numpy as np
import pytest

import symjac
import symjac.codegen
from symjac.build import builder as build
from symjac.build import cache
from symjac.build import toolchain
from symjac.api import generate

ROOT = Path(__file__).resolve().parent.parent
EXT = toolchain.extension_suffix()


def lorenz(u, p):
    return np.array([p[0] * (u[1] - u[0]), u[0] * (p[1] - u[2]) - u[1], u[0] * u[1] - p[2] * u[2]])


LORENZ_SOURCE = textwrap.dedent(
    """
    def lorenz(u, p):
        return np.array([p[0] * (u[1] - u[0]), u[0] * (p[1] - u[2]) - u[1], u[0] * u[1] - p[2] * u[2]])
    """
)


def lorenz_exact(u, p):
    """d lorenz / d u by hand, for a single point."""
    return np.array([[-p[0], p[0], 0.0], [p[1] - u[2], -1.0, -u[0]], [u[1], u[0], -p[2]]])


_C = np.arange(1.0, 41.0) / 10


def heavy(x):
    """About 160 transcendental calls per point: slow enough to time a kernel."""
    return np.array([np.sum(np.sin(x[0] * _C + x[1]) * np.exp(-_C * x[1] ** 2)), x[0] * x[1]])


U0 = np.array([1.0, 2.0, 3.0])
P0 = np.array([10.0, 28.0, 8.0 / 3.0])


@pytest.fixture(scope="module")
def jac_cython():
    return symjac.jacobian(lorenz, u=3, p=3, backend="cython")


@pytest.fixture(scope="module")
def jac_numpy():
    return symjac.jacobian(lorenz, u=3, p=3, backend="numpy")


@pytest.fixture(params=["numpy", "cython"])
def jac(request, jac_numpy, jac_cython):
    return jac_numpy if request.param == "numpy" else jac_cython


@pytest.fixture(scope="module")
def jac_heavy():
    return symjac.jacobian(heavy, x=2, backend="cython")


def _entries(cache: Path):
    """The cache's model entries: not the shared kernel runtime (runtime-...)
    nor the rendered sources of traced programs (source-...) nor warm-start keys (warm-...)
    nor compiled templates (templates-...)."""
    return sorted(path.name for path in cache.iterdir() if not path.name.startswith((".", "runtime-", "source-", "warm-", "templates-")))


def _extensions_under(path: Path):
    return sorted(str(p) for p in path.rglob(f"*{EXT}")) if path.exists() else []


# ---------------------------------------------------------------------------
# calls through the public wrapper, both backends


@pytest.mark.parametrize(
    "args",
    [
        (np.ones(4), P0),  # u too long
        (np.ones(2), P0),  # u too short
        (U0, np.ones((3, 1))),  # extra trailing dim on p
        (np.ones((3, 2)), P0),  # transposed batch
        (np.float64(1.0), P0),  # a scalar for a vector
        (U0, np.ones((2, 3, 2))),
    ],
    ids=["u4", "u2", "p3x1", "u3x2", "scalar", "p2x3x2"],
)
def test_wrong_trailing_shape_is_value_error(jac, args):
    with pytest.raises(ValueError, match="must have shape"):
        jac(*args)


def test_batches_that_do_not_broadcast(jac):
    with pytest.raises(ValueError, match="do not broadcast"):
        jac(np.ones((4, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="do not broadcast"):
        jac(np.ones((0, 3)), np.ones((2, 3)))


@pytest.mark.parametrize("count", [0, 1, 3, 5])
def test_wrong_number_of_arguments_is_type_error(jac, count):
    with pytest.raises(TypeError, match="expected 2 arguments"):
        jac(*([U0] * count))


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1.0, 2.0, 3.0], dtype=object),
        [1.0, "a", 3.0],
        "abc",
        np.array(["1", "2", "3"]),  # numeric strings are not silently parsed
        b"abc",
        None,
        np.array([1 + 0j, 2, 3]),  # complex, even with zero imaginary part
        np.array([1, 2, 3], dtype=np.complex64),
        np.array(["2020-01-01"] * 3, dtype="datetime64[D]"),
        np.array([1, 2, 3], dtype="timedelta64[s]"),
        np.zeros(3, dtype=[("a", "f8")]),
    ],
    ids=["object", "mixed-list", "str", "numeric-str", "bytes", "None", "complex128", "complex64",
         "datetime", "timedelta", "structured"],
)
def test_non_real_arguments_are_type_errors(jac, bad):
    with pytest.raises(TypeError, match=r"argument 'u' (is complex|must hold real numbers|is None)"):
        jac(bad, P0)
    with pytest.raises(TypeError, match=r"argument 'p' (is complex|must hold real numbers|is None)"):
        jac(U0, bad)


def test_complex_error_message_says_complex(jac):
    with pytest.raises(TypeError, match="complex"):
        jac(U0.astype(complex), P0)


def test_non_contiguous_and_negative_stride_views_give_exact_values(jac):
    rng = np.random.default_rng(0)
    U = rng.normal(size=(7, 3))
    expected = np.stack([lorenz_exact(u, P0) for u in U])
    wide = np.zeros((7, 6))
    wide[:, ::2] = U
    big_p = np.zeros(6)
    big_p[::2] = P0
    views = {
        "inner-stride-2": wide[:, ::2],
        "reversed": U[::-1].copy()[::-1],
        "both-reversed": U[::-1, ::-1].copy()[::-1, ::-1],
        "fortran": np.asfortranarray(U),
        "transposed": np.ascontiguousarray(U.T).T,
        "broadcast-rows": None,
    }
    for name, view in views.items():
        if view is None:
            continue
        np.testing.assert_array_equal(view, U)
        assert not view.flags.c_contiguous, name
        np.testing.assert_allclose(jac(view, P0), expected, rtol=1e-15, atol=0, err_msg=name)
        np.testing.assert_allclose(jac(view, big_p[::2]), expected, rtol=1e-15, atol=0, err_msg=name)
        np.testing.assert_allclose(jac(view, P0[::-1].copy()[::-1]), expected, rtol=1e-15, atol=0, err_msg=name)
    # single points through views (the compiled fast path must decline them)
    for k in range(3):
        np.testing.assert_allclose(jac(wide[k, ::2], P0[::-1].copy()[::-1]), expected[k], rtol=1e-15, atol=0)
    # a zero-stride batch (np.broadcast_to) repeats one point
    rows = np.broadcast_to(U[2], (5, 3))
    np.testing.assert_allclose(jac(rows, P0), np.broadcast_to(expected[2], (5, 3, 3)), rtol=1e-15, atol=0)


def test_non_native_dtypes_are_converted(jac):
    expected = lorenz_exact(U0, P0)
    for dtype in (">f8", "<f8", "float32", "int32", "int64", "uint8", "float16"):
        u = U0.astype(dtype)
        np.testing.assert_allclose(jac(u, P0), lorenz_exact(u.astype(float), P0), rtol=1e-15, err_msg=dtype)
    np.testing.assert_allclose(jac(U0, P0.astype(">f8")), expected, rtol=1e-15)
    np.testing.assert_allclose(jac([1, 2, 3], (10.0, 28.0, 8.0 / 3.0)), expected, rtol=1e-15)
    np.testing.assert_allclose(jac(np.array([True, False, True]), P0),
                               lorenz_exact(np.array([1.0, 0.0, 1.0]), P0), rtol=1e-15)


@pytest.mark.parametrize("batch", [(0,), (2, 0), (0, 4), (0, 0, 1)])
def test_zero_size_batch(jac, batch):
    J = jac(np.ones(batch + (3,)), P0)
    assert J.shape == batch + (3, 3)
    assert J.dtype == np.float64
    J = jac(U0, np.ones(batch + (3,)))
    assert J.shape == batch + (3, 3)
    out = np.empty(batch + (3, 3))
    assert jac(np.ones(batch + (3,)), P0, out=out) is out


def test_out_is_written_and_returned(jac):
    U = np.random.default_rng(1).normal(size=(4, 3))
    out = np.full((4, 3, 3), np.nan)
    result = jac(U, P0, out=out)
    assert result is out
    np.testing.assert_array_equal(out, jac(U, P0))
    out1 = np.full((3, 3), np.nan)
    assert jac(U0, P0, out=out1) is out1
    np.testing.assert_allclose(out1, lorenz_exact(U0, P0), rtol=1e-15)


def test_read_only_out_is_value_error(jac):
    out = np.zeros((3, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        jac(U0, P0, out=out)
    assert not out.any()
    # a broadcast view is read-only and has a zero stride: refused at the first check it fails
    with pytest.raises(ValueError, match="C-contiguous|read-only"):
        jac(np.ones((2, 3)), P0, out=np.broadcast_to(np.zeros((3, 3)), (2, 3, 3)))


_SHAPE = r"out= must have shape \(3, 3\), got "
_DTYPE = "out= must have dtype float64, got "
_ARRAY = r"out= must be a numpy array \(or a tuple of them\), got "


@pytest.mark.parametrize(
    "out, error, message",
    [
        (np.zeros((3, 3, 1)), ValueError, _SHAPE + r"\(3, 3, 1\)"),
        (np.zeros((9,)), ValueError, _SHAPE + r"\(9,\)"),
        (np.zeros((1, 3, 3)), ValueError, _SHAPE + r"\(1, 3, 3\)"),
        (np.zeros((3, 3), dtype=np.float32), TypeError, _DTYPE + "float32"),
        (np.zeros((3, 3), dtype=">f8"), TypeError, _DTYPE + ">f8"),
        (np.zeros((3, 3), dtype=np.int64), TypeError, _DTYPE + "int64"),
        (np.zeros((3, 3), dtype=complex), TypeError, _DTYPE + "complex128"),
        (np.zeros((3, 3)).T.copy().T, ValueError, "C-contiguous"),  # F-contiguous 3x3: not C-contiguous
        (np.zeros((3, 6))[:, ::2], ValueError, "C-contiguous"),
        ([[0.0] * 3] * 3, TypeError, _ARRAY + "list"),
        ((np.zeros((3, 3)),), TypeError, _ARRAY + "tuple"),
        ("out", TypeError, _ARRAY + "str"),
    ],
    ids=["3x3x1", "9", "1x3x3", "float32", "big-endian", "int64", "complex", "fortran", "strided", "list",
         "tuple", "str"],
)
def test_bad_out_is_refused(jac, out, error, message):
    before = np.array(out, dtype=object, copy=True) if isinstance(out, np.ndarray) else None
    with pytest.raises(error, match=message):
        jac(U0, P0, out=out)
    if before is not None:
        np.testing.assert_array_equal(np.asarray(out, dtype=object), before)  # nothing written


def test_out_overlapping_an_input_is_value_error(jac):
    memory = np.arange(12.0)
    u = memory[:3]
    with pytest.raises(ValueError, match="overlaps"):
        jac(u, P0, out=memory[:9].reshape(3, 3))
    with pytest.raises(ValueError, match="overlaps"):
        jac(U0, memory[3:6], out=memory[3:12].reshape(3, 3))
    U = np.random.default_rng(2).normal(size=(4, 3))
    with pytest.raises(ValueError, match="overlaps"):  # out is a view of the same batch memory
        big = np.zeros(4 * 9)
        big[:12] = U.ravel()
        jac(big[:12].reshape(4, 3), P0, out=big.reshape(4, 3, 3))
    np.testing.assert_array_equal(memory, np.arange(12.0))  # untouched


def test_nan_and_inf_propagate_exactly_where_the_formula_has_them(jac):
    # J = [[-p0, p0, 0], [p1 - u2, -1, -u0], [u1, u0, -p2]]
    nan, inf = np.nan, np.inf
    J = jac(np.array([nan, 2.0, 3.0]), P0)
    assert np.array_equal(np.isnan(J), np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0]], bool))
    J = jac(np.array([1.0, 2.0, inf]), P0)
    assert J[1, 0] == -inf and np.isfinite(np.delete(J.ravel(), 3)).all()
    J = jac(U0, np.array([inf, 28.0, 8.0 / 3.0]))
    assert J[0, 0] == -inf and J[0, 1] == inf and J[0, 2] == 0.0
    assert np.isfinite(J[1:]).all()
    J = jac(np.full(3, nan), np.full(3, nan))
    expected_nan = np.ones((3, 3), bool)
    expected_nan[0, 2] = False  # structural zero stays zero
    expected_nan[1, 1] = False  # constant -1
    assert np.array_equal(np.isnan(J), expected_nan)
    assert J[0, 2] == 0.0 and J[1, 1] == -1.0
    # a batch mixing finite and non-finite points: finite points are unaffected
    U = np.array([[1.0, 2.0, 3.0], [nan, inf, -inf], [4.0, 5.0, 6.0]])
    J = jac(U, P0)
    np.testing.assert_allclose(J[0], lorenz_exact(U[0], P0), rtol=1e-15)
    np.testing.assert_allclose(J[2], lorenz_exact(U[2], P0), rtol=1e-15)
    assert np.isnan(J[1, 1, 2]) and J[1, 2, 0] == inf and J[1, 1, 0] == inf


@pytest.mark.parametrize("points", [None, 1, 5, 20000])
def test_bad_num_threads_is_value_error(jac, points):
    """num_threads is validated whatever the batch size (not only when the batch is big enough to split)."""
    u = U0 if points is None else np.ones((points, 3))
    with pytest.raises(ValueError, match="num_threads"):
        jac(u, P0, num_threads="many")


def test_overlapping_out_buffers_of_a_tuple_result_are_refused():
    """Two output blocks written into the same memory would silently corrupt each other."""
    def two(x):
        return x * x, np.sin(x)

    jac2 = symjac.jacobian(two, x=3, backend="numpy")
    memory = np.zeros(9)
    with pytest.raises(ValueError, match="out= arrays overlap each other"):
        jac2(U0, out=(memory.reshape(3, 3), memory.reshape(3, 3)))


# ---------------------------------------------------------------------------
# the compiled kernel, called directly with bad buffers (in a subprocess)

# Both copies of the Cython runtime that ship (templates/_runtime.pyx.j2) get
# the same cases: the shared kernel runtime running a kernel library (the
# Python API) and a standalone module written by `symjac codegen`, which
# holds its kernels. The script's first argument picks one: "runtime", or
# the path of the standalone extension.
_KERNEL_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    import numpy as np, symjac
    """
) + LORENZ_SOURCE + textwrap.dedent(
    """
    if sys.argv[1] == "runtime":
        jac = symjac.jacobian(lorenz, u=3, p=3, backend="cython")
        KERNELS, make_entry = jac._kernels, jac._module.make_entry
    else:
        spec = importlib.util.spec_from_file_location("lorenz_standalone", sys.argv[1])
        standalone = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(standalone)
        KERNELS, make_entry = standalone.KERNELS, standalone.make_entry
    K = KERNELS["jacobian"]
    KV = KERNELS["jacobian_values"]
    E = make_entry("jacobian", lambda args, out, threads: "fallback")

    def fell_back(result):
        if not isinstance(result, str) or result != "fallback":
            raise AssertionError("the fast path took arguments it must refuse")
        return result
    n = 4
    rng = np.random.default_rng(0)
    U = rng.normal(size=(n, 3))
    p = np.array([[10.0, 28.0, 8.0 / 3.0]])

    def exact(u, q):
        return np.array([[-q[0], q[0], 0.0], [q[1] - u[2], -1.0, -u[0]], [u[1], u[0], -q[2]]]).ravel()

    EXPECTED = np.stack([exact(u, p[0]) for u in U])

    def run(args, outs, count=n, threads=1, kernel=None):
        (kernel or K)(args, outs, count, threads)
        return outs

    def check(outs, expected=EXPECTED):
        got = np.asarray(outs[0]).reshape(expected.shape)
        if not np.array_equal(got, expected):
            raise AssertionError("wrong values: %r" % (got,))

    def misaligned(shape):
        raw = np.zeros(int(np.prod(shape)) * 8 + 1, dtype=np.uint8)
        return raw[1:].view(np.float64).reshape(shape)

    def case_misaligned_arg():
        a = misaligned((n, 3)); a[...] = U
        check(run((a, p), (np.zeros((n, 9)),)))

    def case_misaligned_out():
        o = misaligned((n, 9))
        check(run((U, p), (o,)))

    CASES = {
        "too_few_args": lambda: run((U,), (np.zeros((n, 9)),)),
        "too_many_args": lambda: run((U, p, p), (np.zeros((n, 9)),)),
        "no_outputs": lambda: run((U, p), ()),
        "too_many_outputs": lambda: run((U, p), (np.zeros((n, 9)), np.zeros((n, 9)))),
        "args_list_not_tuple": lambda: run([U, p], (np.zeros((n, 9)),)),
        "outs_list_not_tuple": lambda: run((U, p), [np.zeros((n, 9))]),
        "float32_arg": lambda: run((U.astype(np.float32), p), (np.zeros((n, 9)),)),
        "int64_arg": lambda: run((U.astype(np.int64), p), (np.zeros((n, 9)),)),
        "bigendian_arg": lambda: run((U.astype(">f8"), p), (np.zeros((n, 9)),)),
        "complex_arg": lambda: run((U.astype(complex), p), (np.zeros((n, 9)),)),
        "float32_out": lambda: run((U, p), (np.zeros((n, 9), np.float32),)),
        "int64_out": lambda: run((U, p), (np.zeros((n, 9), np.int64),)),
        "bigendian_out": lambda: run((U, p), (np.zeros((n, 9), ">f8"),)),
        "one_d_arg": lambda: run((U.ravel(), p), (np.zeros((n, 9)),)),
        "three_d_arg": lambda: run((U.reshape(n, 3, 1), p), (np.zeros((n, 9)),)),
        "one_d_out": lambda: run((U, p), (np.zeros(n * 9),)),
        "wrong_width_arg": lambda: run((U[:, :2].copy(), p), (np.zeros((n, 9)),)),
        "wide_arg": lambda: run((np.zeros((n, 30)), p), (np.zeros((n, 9)),)),
        "wrong_width_out": lambda: run((U, p), (np.zeros((n, 8)),)),
        "rows_neither_1_nor_n": lambda: run((U[:3].copy(), p), (np.zeros((n, 9)),)),
        "n_larger_than_args": lambda: run((U, p), (np.zeros((1000, 9)),), count=1000),
        "n_larger_than_outs": lambda: run((np.zeros((1000, 3)), p), (np.zeros((n, 9)),), count=1000),
        "n_larger_than_both": lambda: run((U, p), (np.zeros((n, 9)),), count=10**6),
        "huge_n_broadcast_args": lambda: run((U[:1].copy(), p), (np.zeros((n, 9)),), count=2**62),
        "negative_n": lambda: run((U, p), (np.zeros((n, 9)),), count=-1),
        "n_not_int": lambda: run((U, p), (np.zeros((n, 9)),), count="4"),
        "readonly_out": lambda: run((U, p), (np.broadcast_to(np.zeros(9), (n, 9)),)),
        "readonly_flag_out": lambda: (lambda o: (o.setflags(write=False), run((U, p), (o,))))(np.zeros((n, 9))),
        "strided_inner_arg": lambda: run((np.repeat(U, 2, axis=1)[:, ::2], p), (np.zeros((n, 9)),)),
        "strided_inner_out": lambda: run((U, p), (np.zeros((n, 18))[:, ::2],)),
        "strided_rows_out": lambda: run((U, p), (np.zeros((2 * n, 9))[::2],)),
        "transposed_out": lambda: run((U, p), (np.zeros((9, n)).T,)),
        "reversed_rows_out": lambda: run((U, p), (np.zeros((n, 9))[::-1],)),
        "zero_stride_rows_out": lambda: run((U, p), (np.lib.stride_tricks.as_strided(np.zeros(9), (n, 9), (0, 8)),)),
        "none_arg": lambda: run((None, p), (np.zeros((n, 9)),)),
        "bytes_arg": lambda: run((bytes(8 * 3 * n), p), (np.zeros((n, 9)),)),
        "bytes_out": lambda: run((U, p), (bytes(8 * 9 * n),)),
        "bytearray_out": lambda: run((U, p), (bytearray(8 * 9 * n),)),
        "str_out": lambda: run((U, p), ("x" * 9 * n,)),
        "packed_wrong_width": lambda: run((U, p), (np.zeros((n, 9)),), kernel=KV),
        "entry_unknown_kind": lambda: make_entry("nope", print),
        "entry_too_few_args": lambda: fell_back(E(U[0].copy())),
        "entry_wrong_shape": lambda: fell_back(E(U[:2].copy(), p[0].copy())),
        "entry_float32": lambda: fell_back(E(U[0].astype(np.float32), p[0].copy())),
        "entry_bigendian": lambda: fell_back(E(U[0].astype(">f8"), p[0].copy())),
        "entry_strided": lambda: fell_back(E(np.repeat(U[0], 2)[::2], p[0].copy())),
        "entry_list": lambda: fell_back(E(list(U[0]), p[0].copy())),
        "entry_subclass": lambda: fell_back(E(np.ma.masked_array(U[0]), p[0].copy())),
        "entry_with_out": lambda: fell_back(E(U[0].copy(), p[0].copy(), out=np.zeros((3, 3)))),
        "ok_entry_point": lambda: check(E(U[0].copy(), p[0].copy()).reshape(1, 9), EXPECTED[:1]),
        # valid but unusual buffers: must compute the right numbers
        "ok_broadcast_param": lambda: check(run((U, p), (np.zeros((n, 9)),))),
        "ok_negative_row_stride_arg": lambda: check(run((U[::-1].copy()[::-1], p), (np.zeros((n, 9)),))),
        "ok_zero_stride_arg": lambda: check(
            run((np.broadcast_to(U[1], (n, 3)), np.broadcast_to(p, (n, 3))), (np.zeros((n, 9)),)),
            np.broadcast_to(EXPECTED[1], (n, 9))),
        "ok_memoryview_out": lambda: check(run((U, p), (memoryview(bytearray(8 * 9 * n)).cast("d", (n, 9)),))),
        "ok_zero_points": lambda: run((np.zeros((0, 3)), p), (np.zeros((0, 9)),), count=0),
        "ok_many_threads": lambda: check(run((U, p), (np.zeros((n, 9)),), threads=64)),
        "ok_misaligned_arg": case_misaligned_arg,
        "ok_misaligned_out": case_misaligned_out,
    }

    if sys.argv[2:] == ["--list"]:
        print(json.dumps(sorted(CASES)))
        sys.exit(0)
    for name in sys.argv[2:]:
        print("START " + name, flush=True)
        try:
            result = CASES[name]()
            outcome = ["ok", None if not isinstance(result, np.ndarray) else list(result.shape)]
        except Exception as error:
            outcome = [type(error).__name__, str(error)[:300]]
        print("RESULT " + name + " " + json.dumps(outcome), flush=True)
    """
)

# Expected outcome per case: a tuple of acceptable exception names, or "ok".
_REFUSED = ("TypeError", "ValueError", "BufferError")
KERNEL_CASES = {
    "too_few_args": ("ValueError",),
    "too_many_args": ("ValueError",),
    "no_outputs": ("ValueError",),
    "too_many_outputs": ("ValueError",),
    "args_list_not_tuple": ("TypeError",),
    "outs_list_not_tuple": ("TypeError",),
    "float32_arg": ("TypeError",),
    "int64_arg": ("TypeError",),
    "bigendian_arg": ("TypeError",),
    "complex_arg": ("TypeError",),
    "float32_out": ("TypeError",),
    "int64_out": ("TypeError",),
    "bigendian_out": ("TypeError",),
    "one_d_arg": ("TypeError", "ValueError"),
    "three_d_arg": ("TypeError", "ValueError"),
    "one_d_out": ("TypeError", "ValueError"),
    "wrong_width_arg": ("ValueError",),
    "wide_arg": ("ValueError",),
    "wrong_width_out": ("ValueError",),
    "rows_neither_1_nor_n": ("ValueError",),
    "n_larger_than_args": ("ValueError",),
    "n_larger_than_outs": ("ValueError",),
    "n_larger_than_both": ("ValueError",),
    "huge_n_broadcast_args": ("ValueError",),
    "negative_n": ("ValueError", "OverflowError"),
    "n_not_int": ("TypeError",),
    "readonly_out": _REFUSED,
    "readonly_flag_out": _REFUSED,
    "strided_inner_arg": ("ValueError",),
    "strided_inner_out": ("ValueError",),
    "strided_rows_out": ("ValueError",),
    "transposed_out": ("ValueError",),
    "reversed_rows_out": ("ValueError",),
    "zero_stride_rows_out": _REFUSED,
    "none_arg": ("TypeError",),
    "bytes_arg": ("TypeError", "ValueError"),
    "bytes_out": _REFUSED,
    "bytearray_out": ("TypeError", "ValueError"),
    "str_out": ("TypeError",),
    "packed_wrong_width": ("ValueError",),
    "entry_unknown_kind": ("KeyError",),
    "entry_too_few_args": "ok",
    "entry_wrong_shape": "ok",
    "entry_float32": "ok",
    "entry_bigendian": "ok",
    "entry_strided": "ok",
    "entry_list": "ok",
    "entry_subclass": "ok",
    "entry_with_out": "ok",
    "ok_entry_point": "ok",
    "ok_broadcast_param": "ok",
    "ok_negative_row_stride_arg": "ok",
    "ok_zero_stride_arg": "ok",
    "ok_memoryview_out": "ok",
    "ok_zero_points": "ok",
    "ok_many_threads": "ok",
    # a misaligned buffer may be refused or computed correctly, never crash
    "ok_misaligned_arg": ("ok",) + _REFUSED,
    "ok_misaligned_out": ("ok",) + _REFUSED,
}


@pytest.fixture(scope="module", params=["runtime", "standalone"])
def kernel_copy(request, jac_cython, tmp_path_factory):
    """What the case script loads: "runtime" (the kernel runtime, through the
    Python API) or the path of a standalone `symjac codegen` module."""
    if request.param == "runtime":
        return "runtime"
    directory = tmp_path_factory.mktemp("standalone")
    symjac.codegen.write_module(lorenz, (), {"u": 3, "p": 3}, backend="cython", name="lorenz_standalone",
                                out_dir=directory)
    return str(directory / f"lorenz_standalone{EXT}")


@pytest.fixture(scope="module")
def kernel_outcomes(kernel_copy, tmp_path_factory):
    """Run every case in a subprocess; after a crash, restart with the cases left."""
    script = tmp_path_factory.mktemp("kernel") / "kernel_cases.py"
    script.write_text(_KERNEL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    listed = subprocess.run([sys.executable, str(script), kernel_copy, "--list"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(listed.stdout)) == sorted(KERNEL_CASES)
    remaining = list(KERNEL_CASES)
    outcomes = {}
    while remaining:
        done = subprocess.run([sys.executable, str(script), kernel_copy, *remaining], capture_output=True, text=True,
                              env=env, timeout=300)
        started = None
        for line in done.stdout.splitlines():
            if line.startswith("START "):
                started = line.split()[1]
            elif line.startswith("RESULT "):
                _, name, payload = line.split(" ", 2)
                outcomes[name] = json.loads(payload)
                started = None
        if done.returncode != 0:
            victim = started or remaining[0]
            outcomes[victim] = ["CRASH", f"exit status {done.returncode}; stderr: {done.stderr[-2000:]}"]
        remaining = [name for name in remaining if name not in outcomes]
        if done.returncode == 0 and remaining:
            raise AssertionError(f"cases never reported: {remaining}\n{done.stderr[-3000:]}")
    return outcomes


def test_kernel_case_list_is_complete(kernel_outcomes):
    assert sorted(kernel_outcomes) == sorted(KERNEL_CASES)


@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_kernel_called_with_bad_buffers_never_crashes(kernel_outcomes, case):
    kind, detail = kernel_outcomes[case]
    expected = KERNEL_CASES[case]
    assert kind != "CRASH", f"{case}: the interpreter died: {detail}"
    if expected == "ok":
        assert kind == "ok", f"{case}: expected success, got {kind}: {detail}"
    else:
        assert kind in expected, f"{case}: expected one of {expected}, got {kind}: {detail}"


# ---------------------------------------------------------------------------
# threads


def test_eight_threads_get_exactly_the_single_thread_results(jac_cython):
    rng = np.random.default_rng(3)
    inputs = [(rng.normal(size=(size, 3)), rng.normal(size=3)) for size in (1, 7, 500, 3000, 12000, 1, 64, 20000)]
    points = [(rng.normal(size=3), rng.normal(size=3)) for _ in range(8)]
    expected = [jac_cython(U, p, num_threads=1) for U, p in inputs]
    expected_points = [jac_cython(u.copy(), p.copy()) for u, p in points]
    for (u, p), J in zip(points, expected_points):
        np.testing.assert_allclose(J, lorenz_exact(u, p), rtol=1e-15)
    failures = []
    barrier = threading.Barrier(8)

    def worker(k):
        try:
            barrier.wait()
            for repeat in range(30):
                U, p = inputs[(k + repeat) % 8]
                J = jac_cython(U, p, num_threads=None if repeat % 2 else 1)
                if not np.array_equal(J, expected[(k + repeat) % 8]):
                    failures.append(("batch", k, repeat))
                u, q = points[(k + repeat) % 8]
                if not np.array_equal(jac_cython(u, q), expected_points[(k + repeat) % 8]):
                    failures.append(("point", k, repeat))
                out = np.empty_like(expected[k])
                jac_cython(*inputs[k], out=out)
                if not np.array_equal(out, expected[k]):
                    failures.append(("out", k, repeat))
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(("raised", k, repr(error)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert failures == []


def test_kernel_releases_the_gil(jac_heavy):
    """While one thread is inside a long kernel call, another thread runs Python code.

    The witness is the kernel's own output, not a clock: out= starts unwritten and the
    kernel (num_threads=1) fills it point by point, first to last. A Python thread that
    sees the first point written and the last one not yet written ran while the kernel
    was in the middle of its loop, which is impossible unless the kernel released the
    GIL. With the GIL held, that thread can only look before the call (nothing written)
    or after it (everything written), so a regression fails every attempt; with the GIL
    released, only a machine too busy to schedule the observer at all during a call of
    a few tenths of a second could miss it, so a few attempts are allowed.
    """
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.uniform(-1, 1, 400_000), rng.uniform(0.5, 1.0, 400_000)])  # J[:, 1, 0] = x1 != 0
    out = np.empty((400_000, 2, 2))
    partial = threading.Event()
    call_returned = threading.Event()

    def observer():
        while not call_returned.is_set():
            if out[0, 1, 0] == X[0, 1] and out[-1, 1, 0] != X[-1, 1]:
                partial.set()
                return

    for attempt in range(10):
        out.fill(np.nan)
        call_returned.clear()
        thread = threading.Thread(target=observer)
        thread.start()
        try:
            result = jac_heavy(X, out=out, num_threads=1)
        finally:
            call_returned.set()
            thread.join(timeout=120)
        assert not thread.is_alive()
        assert result is out
        np.testing.assert_array_equal(out[:, 1, 0], X[:, 1])  # the call itself completed every point
        if partial.is_set():
            break
    assert partial.is_set(), ("in 10 kernel calls another Python thread never ran while the kernel "
                              "was half-way through its points: the GIL was not released")
    np.testing.assert_allclose(out[:, 1, 1], X[:, 0], rtol=1e-15)


# ---------------------------------------------------------------------------
# the build cache

_BUILD_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np, symjac
    from symjac.build import builder as build
    from symjac.build import cache
    from symjac.build import toolchain
    compiled = []
    original = toolchain.compile_extension
    toolchain.compile_extension = lambda *a: (compiled.append(1), original(*a))
    """
) + LORENZ_SOURCE + textwrap.dedent(
    """
    # -O0: these tests exercise the cache, not the optimiser, and -O0 compiles in a third of the time
    jac = symjac.jacobian(lorenz, u=3, p=3, backend="cython", flags=("-O0",))
    J = jac(np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8.0 / 3.0]))
    print(json.dumps({"J": J.tolist(), "compiled": len(compiled), "file": jac._module.__file__}))
    """
)


def _build_env(cache: Path, **extra):
    env = {**os.environ, "SYMJAC_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT), **extra}
    env.pop("SYMJAC_DEBUG", None)
    return env


def test_four_processes_building_at_once_share_one_entry(tmp_path):
    cache = tmp_path / "new" / "cache"  # does not exist yet: the processes race to create it
    processes = [subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT], env=_build_env(cache),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        results.append(json.loads(stdout))
    assert all(result["J"] == results[0]["J"] for result in results)
    np.testing.assert_allclose(results[0]["J"], lorenz_exact(U0, P0), rtol=1e-15)
    entries = _entries(cache)
    assert len(entries) == 1, entries
    assert symjac.build.cache.verified_extension(cache / entries[0]) is not None
    assert all(Path(result["file"]).parent == cache / entries[0] for result in results), results
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    leftovers = [path.name for path in cache.iterdir() if path.name.startswith(".")]
    assert leftovers == [], f"temporary build directories left behind: {leftovers}"


def test_killed_build_leaves_nothing_that_loads(tmp_path):
    cache = tmp_path / "cache"
    marker = tmp_path / "compiling"
    wrapper = tmp_path / "slowcc"
    wrapper.write_text(textwrap.dedent(
        f"""\
        #!/bin/sh
        case " $* " in
          *" -shared "*) if [ -n "$SYMJAC_TEST_SLOW" ]; then touch '{marker}'; sleep 120; fi ;;
        esac
        exec gcc "$@"
        """))
    wrapper.chmod(0o755)
    slow = subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT],
                            env=_build_env(cache, CC=str(wrapper), SYMJAC_TEST_SLOW="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert slow.poll() is None, f"the build finished before it could be killed: {slow.communicate()}"
            assert time.monotonic() < deadline, "the compiler was never started"
            time.sleep(0.05)
    finally:
        os.killpg(slow.pid, signal.SIGKILL)  # the Python process and its compiler wrapper
        slow.communicate()
    assert slow.returncode == -signal.SIGKILL
    assert _entries(cache) == [], "a killed build left an entry"
    done = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT], env=_build_env(cache, CC=str(wrapper)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["compiled"] == 1
    np.testing.assert_allclose(result["J"], lorenz_exact(U0, P0), rtol=1e-15)
    entries = _entries(cache)
    assert len(entries) == 1
    assert symjac.build.cache.verified_extension(cache / entries[0]) is not None


def test_cache_directory_is_created_private_even_with_a_permissive_umask(tmp_path, monkeypatch, jac_cython):
    cache = tmp_path / "a" / "b" / "cache"
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    previous = os.umask(0)
    try:
        jac = symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    np.testing.assert_allclose(jac(U0, P0), lorenz_exact(U0, P0), rtol=1e-15)


@pytest.mark.parametrize("mode", [0o770, 0o730, 0o703, 0o777, 0o1777, 0o2775])
def test_cache_directory_writable_by_others_is_refused(tmp_path, monkeypatch, jac_cython, mode):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    with pytest.raises(symjac.CacheError, match="writable by other users"):
        symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    assert list(cache.iterdir()) == []
    assert stat.S_IMODE(cache.stat().st_mode) == mode & 0o7777  # not silently "fixed"


def test_cache_directory_of_another_user_is_refused(tmp_path, monkeypatch, jac_cython):
    if os.geteuid() != 0:
        # only root can give a directory away; ordinary users test the same check by owner mismatch on /
        monkeypatch.setenv("SYMJAC_CACHE_DIR", "/")
    else:
        cache = tmp_path / "cache"
        cache.mkdir(mode=0o700)
        os.chown(cache, 12345, 12345)
        monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    with pytest.raises(symjac.CacheError, match="belongs to another user"):
        symjac.jacobian(lorenz, u=3, p=3, backend="cython")


def test_entry_that_others_can_write_is_refused_not_loaded(tmp_path, monkeypatch, jac_cython):
    """An entry whose extension other users may write to could have been tampered
    with: symjac refuses it with a CacheError and neither loads nor rebuilds it."""
    source = generate(lorenz, (), {"u": 3, "p": 3}, wrt=None, backend="cython", kinds=("jacobian",)).source
    key = build.cache_key(source, jac_cython.options.build_options())  # the API builds native
    shared_entry = Path(jac_cython._module.__file__).parent
    assert shared_entry.name == key[:32]
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    entry = cache / key[:32]
    shutil.copytree(shared_entry, entry)
    extension = entry / Path(jac_cython._module.__file__).name
    assert symjac.build.cache.verified_extension(entry) == extension  # a good copy verifies
    extension.chmod(0o666)
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    monkeypatch.setattr(build, "_loaded", {})
    compiled = []
    original = toolchain.compile_extension
    monkeypatch.setattr(toolchain, "compile_extension", lambda *a: (compiled.append(a), original(*a)))
    with pytest.raises(symjac.CacheError, match="other users may write"):
        symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    assert compiled == []
    assert build.clear_cache(cache) == 1  # the way out the message names
    jac = symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    assert len(compiled) == 1
    np.testing.assert_allclose(jac(U0, P0), lorenz_exact(U0, P0), rtol=1e-15)


# ---------------------------------------------------------------------------
# names


def _function_with_parameter_names(*names):
    """A function whose signature (as inspect and symjac see it) has these parameter names,
    valid Python identifiers or not."""
    def f(*args):
        return args[0] * 2

    parameters = []
    for number, name in enumerate(names):
        parameter = inspect.Parameter(f"placeholder{number}", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        parameter._name = name  # bypass inspect's own validation, like a hand-made __signature__ could
        parameters.append(parameter)
    f.__signature__ = inspect.Signature(parameters)
    return f


HOSTILE_NAMES = [
    "x; import os",
    "x)\nimport os\n(",
    "x[0]",
    "x */ system(\"rm\"); /*",
    "__import__",
    "__init__",
    "_x",
    "_t0",
    "_i",
    "\u0445",  # Cyrillic small ha, looks like x
    "y\u0445",
    "\uff58",  # fullwidth x
    "x\u200b",  # zero-width space
    "int",
    "double",
    "static",
    "void",
    "NULL",
    "lambda",
    "class",
    "None",
    "match",
    "sin",
    "exp",
    "pow",
    "sqrt",
    "np",
    "numpy",
    "x" * 200,
    "",
    "1x",
    "x-y",
    "x y",
    "x\x00",
]


# names.check_identifier's three refusals (too long, not ASCII-identifier, reserved), for a given NAME
_REFUSED = r"NAME .*(is longer than 64 characters|is not allowed: use ASCII letters|is a keyword or a name)"
_REFUSED_ARGUMENT = _REFUSED.replace("NAME", "argument name")


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n)[:30] for n in HOSTILE_NAMES])
def test_hostile_argument_names_are_rejected_when_tracing(name):
    f = _function_with_parameter_names(name)
    with pytest.raises(symjac.InvalidNameError, match=_REFUSED_ARGUMENT):
        symjac.trace(f, 3)
    g = _function_with_parameter_names("y", name)
    with pytest.raises(symjac.InvalidNameError, match=_REFUSED_ARGUMENT):
        symjac.trace(g, 3, 3)


# Python itself NFKC-normalises identifiers in source code (a fullwidth 'x' becomes 'x'), so
# only names that survive normalisation unchanged are hostile as real parameter names.
@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if n.isidentifier() and not keyword.iskeyword(n)
                                  and unicodedata.normalize("NFKC", n) == n])
def test_hostile_but_legal_python_parameter_names_are_rejected(name):
    namespace = {"np": np}
    exec(f"def f({name}):\n    return {name} * 2\n", namespace)
    with pytest.raises(symjac.InvalidNameError, match=_REFUSED_ARGUMENT):
        symjac.trace(namespace["f"], 3)
    with pytest.raises(symjac.InvalidNameError, match=_REFUSED_ARGUMENT):
        symjac.jacobian(namespace["f"], 3, backend="numpy")


def test_a_64_character_name_is_accepted_and_65_is_not():
    ok = _function_with_parameter_names("x" * 64)
    assert symjac.trace(ok, 2).arguments[0].name == "x" * 64
    with pytest.raises(symjac.InvalidNameError, match="longer than 64 characters"):
        symjac.trace(_function_with_parameter_names("x" * 65), 2)


def _square(x):
    return x * x


@pytest.mark.parametrize("name", ["x; import os", "../evil", "evil/../../x", "numpy", "np", "import", "_hidden",
                                  "\u0445", "a" * 200, "", "sin", "static"])
def test_hostile_module_names_are_rejected_and_nothing_is_written(tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(symjac.InvalidNameError, match=_REFUSED.replace("NAME", "module name")):
        symjac.codegen.write_module(_square, (), {"x": 2}, backend="numpy", name=name, out_dir=out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_hostile_module_name_on_the_command_line(tmp_path):
    model = tmp_path / "model.py"
    model.write_text("def square(x):\n    return x * x\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "symjac", "codegen", f"{model}:square", "--arg", "x=2", "--name", "x; import os",
         "--backend", "numpy", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("symjac: error: module name"), done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py"]


HOSTILE_FUNCTION_NAMES = [
    'f */ system("rm"); /*',
    'f"""\nimport sys; sys.exit(3)\n"""',
    "f'''\nimport sys; sys.exit(3)\n'''",
    "f\nimport sys; sys.exit(3)",
    "f\\",
    "f # \n raise SystemExit(3)",
    "f\r\nraise SystemExit(3)",
    "{{ header }}{% raw %}",
]


@pytest.mark.parametrize("name", HOSTILE_FUNCTION_NAMES, ids=range(len(HOSTILE_FUNCTION_NAMES)))
def test_hostile_function_name_never_reaches_generated_code(name):
    def f(x):
        return np.array([x[0] * x[1], np.sin(x[0])])

    f.__name__ = name
    f.__qualname__ = name
    for backend in ("cython", "numpy"):
        for standalone in (False, True):
            text = generate(f, (), {"x": 2}, wrt=None, backend=backend, kinds=("jacobian", "function"),
                            standalone=standalone).source.text
            assert name not in text
            assert "system(" not in text and "sys.exit(3)" not in text and "SystemExit(3)" not in text
            if backend == "numpy":
                compile(text, "<generated>", "exec")  # still valid Python
    jac = symjac.jacobian(f, x=2, backend="numpy")  # executes the generated module
    np.testing.assert_allclose(jac(np.array([2.0, 3.0])), [[3.0, 2.0], [np.cos(2.0), 0.0]], rtol=1e-15)
    with pytest.raises(symjac.InvalidNameError, match="module name .* is not allowed"):  # as a default module name
        symjac.codegen.write_module(f, (), {"x": 2}, backend="numpy", out_dir="/nonexistent-symjac-dir")


# ---------------------------------------------------------------------------
# build failures


def _assert_nothing_importable(cache: Path):
    assert _extensions_under(cache) == [], "a half-built extension was left in the cache"
    if cache.exists():
        assert _entries(cache) == []
        assert sorted(p.name for p in cache.iterdir()) == [], "temporary build directories were left behind"


def test_no_compiler_is_a_build_error(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    with pytest.raises(symjac.BuildError, match="could not be started") as info:
        symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    assert info.value.command[0] == "/nonexistent/cc"
    assert "-shared" in info.value.command
    assert isinstance(info.value.log, str)
    _assert_nothing_importable(cache)


def test_failing_compiler_is_a_build_error_with_command_and_log(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    failing = tmp_path / "failcc"
    failing.write_text("#!/bin/sh\necho 'synthetic compiler failure' >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    with pytest.raises(symjac.BuildError, match="exit code 3") as info:
        symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    assert info.value.command[0] == str(failing)
    assert "synthetic compiler failure" in info.value.log
    assert "synthetic compiler failure" in str(info.value)
    _assert_nothing_importable(cache)


def test_cc_false_is_a_build_error(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    with pytest.raises(symjac.BuildError, match="the C compiler failed with exit code 1") as info:
        symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    assert info.value.command[0] == "false"
    _assert_nothing_importable(cache)


def test_unwritable_cache_directory_is_a_symjac_error(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        # root ignores permission bits: make the cache impossible to create instead
        (tmp_path / "file").write_text("not a directory")
        cache = tmp_path / "file" / "cache"
    else:
        cache = tmp_path / "cache"
        cache.mkdir(mode=0o700)
        cache.chmod(0o500)
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    monkeypatch.setattr(build, "_loaded", {})
    try:
        with pytest.raises(symjac.SymjacError, match="cache directory") as info:
            symjac.jacobian(lorenz, u=3, p=3, backend="cython")
        assert str(cache) in str(info.value)
    finally:
        if cache.is_dir():
            cache.chmod(0o700)
    if cache.is_dir():
        _assert_nothing_importable(cache)
    else:
        assert not cache.parent.is_dir()


def test_cache_path_that_is_a_file_is_a_symjac_error(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("not a directory")
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    monkeypatch.setattr(build, "_loaded", {})
    with pytest.raises(symjac.CacheError, match="cannot use .* as the symjac cache directory"):
        symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    assert cache.read_text() == "not a directory"


def test_failed_codegen_build_leaves_no_importable_extension(tmp_path, monkeypatch):
    failing = tmp_path / "failcc"
    failing.write_text("#!/bin/sh\necho 'synthetic compiler failure' >&2\nexit 3\n")
    failing.chmod(0o755)
    out = tmp_path / "generated"
    out.mkdir()
    stale = out / f"lorenz_mod{EXT}"
    stale.write_bytes(b"stale extension from an earlier build")
    monkeypatch.setenv("CC", str(failing))
    with pytest.raises(symjac.BuildError, match="the C compiler failed with exit code 3") as info:
        symjac.codegen.write_module(lorenz, (), {"u": 3, "p": 3}, backend="cython", name="lorenz_mod", out_dir=out)
    assert "synthetic compiler failure" in info.value.log
    assert sorted(p.name for p in out.iterdir()) == ["lorenz_mod.build.log", "lorenz_mod.pyx"]
    assert "synthetic compiler failure" in (out / "lorenz_mod.build.log").read_text()


# ---------------------------------------------------------------------------
# memory: repeated calls and loads do not leak


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_repeated_calls_and_loads_do_not_leak(jac_cython, monkeypatch):
    """Python-level leaks (a reference kept per call or per load: result arrays, buffers,
    module objects) are counted exactly with tracemalloc, which machine load cannot
    disturb; C-level leaks tracemalloc cannot see are caught by RSS with a bound far
    above the allocator's noise."""
    u, p = U0.copy(), P0.copy()
    U = np.random.default_rng(5).normal(size=(8, 3))
    out = np.empty((8, 3, 3))
    source = generate(lorenz, (), {"u": 3, "p": 3}, wrt=None, backend="cython", kinds=("jacobian",)).source
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setattr(toolchain, "compile_extension", lambda *a: pytest.fail("a cached load compiled"))

    def calls(count):
        for _ in range(count):
            jac_cython(u, p)  # single-point fast path
            jac_cython(U, p, out=out)  # general path
            jac_cython.values(u, p)

    def loads(count):
        for _ in range(count):
            build._loaded.clear()
            module = build.load(source, jac_cython.options.build_options())
            assert module.KERNELS
        for _ in range(count // 5):
            symjac.jacobian(lorenz, u=3, p=3, backend="cython")

    calls(2000)
    loads(5)
    before = _rss_bytes()
    calls(20_000)
    rss_growth = _rss_bytes() - before
    # 60,000 calls: a C leak of 1 KiB per call would be 60 MiB; the allocator's noise is far below the bound
    assert rss_growth < 48 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MiB over 60,000 calls"

    assert not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        calls(200)
        loads(5)  # warm every cache tracemalloc could see filling up
        start = _traced_bytes()
        calls(2000)
        after_calls = _traced_bytes()
        loads(20)
        after_loads = _traced_bytes()
    finally:
        tracemalloc.stop()
    # a leaked result or buffer reference costs >= 100 bytes per call (6,000 calls here): >= 600 kB
    assert after_calls - start < 64 * 2**10, f"{after_calls - start} bytes still allocated after 6,000 calls"
    # measured: under 1 kB per load (importlib bookkeeping); a leaked module with its dict is tens of kB
    assert after_loads - after_calls < 20 * 5 * 2**10, f"{after_loads - after_calls} bytes still allocated after 20 loads"
