"""Kernel libraries and the shared kernel runtime (build.load_kernels).

The Python API builds each model as one plain C file (templates/c_kernels.c.j2)
compiled by the C compiler alone, and runs it through one Cython extension per
toolchain (templates/kernel_runtime.pyx.j2). Every kernel kind must give the
numbers of an independent oracle (the model evaluated by numpy and
differentiated by complex step, tests/oracles.py: it shares nothing with
symjac's pipeline) and of the numpy backend, through both the general path
and the compiled common call (make_entry; tests/test_small_calls.py has the
rest), with out=, threads and the same refusals.
"""

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import symjac
from oracles import central_difference_jacobian, complex_step_jacobian
from symjac.build import builder as build
from symjac.emit.backends import source_suffix
from symjac.emit import render

RNG = np.random.default_rng(12)


def model(x, k):
    return np.array([k[0] * x[0] * x[1] + np.sin(x[2]), x[1] ** 2 - k[1] * np.exp(x[0]), x[0] * x[2] * k[2]])


def pair(x, k):  # a tuple of outputs
    return k[0] * x * x[0], np.sum(x ** 3) * k[1]


def scalar(x, k):
    return k[0] * np.sum(x ** 2 * np.roll(x, 1)) + np.prod(np.cos(x))


X = RNG.normal(size=3)
K = RNG.normal(size=3)
XB = RNG.normal(size=(5, 3))


@pytest.fixture(scope="module")
def jacobians():
    kernels = ("jacobian", "function", "function_and_jacobian")
    return {backend: symjac.jacobian(model, x=3, k=3, kernels=kernels, backend=backend)
            for backend in ("cython", "numpy")}


@pytest.fixture(scope="module")
def hessians():
    return {backend: symjac.hessian(scalar, x=3, k=2, backend=backend) for backend in ("cython", "numpy")}


def _same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_the_python_api_builds_a_kernel_library(jacobians):
    jac = jacobians["cython"]
    assert jac.backend == "cython"
    assert "symjac_exports" in jac.source and "cdef" not in jac.source and "Python.h" not in jac.source
    assert jac._module.__file__.endswith(".so") and jac._module.MODEL.path == jac._module.__file__
    assert set(jac._module.KERNELS) == {"jacobian", "jacobian_values", "function", "function_and_jacobian"}
    assert set(jac._module.POINT_KINDS) == {"jacobian", "jacobian_values", "function"}


def _per_point(oracle, x, *rest):
    """``oracle(point, *rest)`` for one point, stacked over the rows of a batch."""
    return oracle(x, *rest) if x.ndim == 1 else np.stack([oracle(point, *rest) for point in x])


def _jacobian_oracle(x, k):
    return complex_step_jacobian(model, (x, k), 0)


def _hessian_oracle(x, k):
    """Central differences of the complex-step gradient: about 1e-10 off."""
    return central_difference_jacobian(lambda y, q: complex_step_jacobian(scalar, (y, q), 0), (x, k), 0, h=1e-5)


def _packed(full, compiled, x):
    """The packed values of ``full`` (one buffer) in the compiled object's NONZEROS order."""
    (indices,) = compiled.signature.nonzeros[compiled.PACKED]
    return full.reshape(x.shape[:-1] + (-1,))[..., list(indices)]


@pytest.mark.parametrize("batch", [False, True])
def test_every_jacobian_kind_matches_an_independent_oracle(jacobians, batch):
    jac = jacobians["cython"]
    x = XB if batch else X
    expected = _per_point(_jacobian_oracle, x, K)
    function = _per_point(model, x, K)
    _same(jac(x, K), expected)
    _same(jac.values(x, K), _packed(expected, jac, x))
    _same(jac.function(x, K), function)
    _same(jac.function_and_jacobian(x, K), (function, expected))


@pytest.mark.parametrize("batch", [False, True])
def test_hessian_kinds_match_an_independent_oracle(hessians, batch):
    hess = hessians["cython"]
    x, k = (XB if batch else X), K[:2]
    expected = _per_point(_hessian_oracle, x, k)
    np.testing.assert_allclose(hess(x, k), expected, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(hess.values(x, k), _packed(expected, hess, x), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("kind", ["__call__", "values", "function", "function_and_jacobian"])
@pytest.mark.parametrize("batch", [False, True])
def test_every_jacobian_kind_matches_the_numpy_backend(jacobians, kind, batch):
    x = XB if batch else X
    got = getattr(jacobians["cython"], kind)(x, K)
    expected = getattr(jacobians["numpy"], kind)(x, K)
    _same(got, expected)


@pytest.mark.parametrize("kind", ["__call__", "values"])
@pytest.mark.parametrize("batch", [False, True])
def test_hessian_kinds_match_the_numpy_backend(hessians, kind, batch):
    x = XB if batch else X
    k = K[:2]
    _same(getattr(hessians["cython"], kind)(x, k), getattr(hessians["numpy"], kind)(x, k))


def test_tuple_outputs_and_tuple_wrt():
    jacs = {backend: symjac.jacobian(pair, x=3, k=2, wrt=("x", "k"), backend=backend) for backend in ("cython", "numpy")}
    for x in (X, XB):
        result = jacs["cython"](x, K[:2])
        assert isinstance(result, tuple) and isinstance(result[0], tuple)
        for output in range(2):  # d output / d x and d output / d k, by complex step
            for argument in range(2):
                expected = (np.stack([complex_step_jacobian(pair, (point, K[:2]), argument)[output] for point in x])
                            if x.ndim == 2 else complex_step_jacobian(pair, (x, K[:2]), argument)[output])
                _same(result[output][argument], expected)
        _same(result, jacs["numpy"](x, K[:2]))
        _same(jacs["cython"].values(x, K[:2]), jacs["numpy"].values(x, K[:2]))


def test_out_and_threads(jacobians):
    jac = jacobians["cython"]
    X2 = RNG.normal(size=(4000, 3))
    expected = jacobians["numpy"](X2, K)
    out = np.empty((4000, 3, 3))
    assert jac(X2, K, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)
    one = jac(X2, K, num_threads=1)
    two = jac(X2, K, num_threads=2)
    assert np.array_equal(one, two)
    f_out, j_out = np.empty((4000, 3)), np.empty((4000, 3, 3))
    result = jac.function_and_jacobian(X2, K, out=(f_out, j_out))
    assert result[0] is f_out and result[1] is j_out
    np.testing.assert_allclose(j_out, expected, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="out= must have shape"):
        jac(X2, K, out=np.empty((3, 3)))


def test_single_points_take_the_compiled_fast_path(jacobians):
    jac = jacobians["cython"]
    entry = type(jac).__call__
    assert type(entry).__name__ == "_Entry"
    got = entry(X.copy(), K.copy())  # straight through the fast path
    _same(got, jacobians["numpy"](X, K))
    # arguments the fast path must refuse fall back to the general path, same numbers
    _same(jac(list(X), K), got)
    _same(jac(X.astype(np.float32), K), jac(X.astype(np.float32).astype(np.float64), K))
    _same(jac(np.repeat(X, 2)[::2], K), got)


def test_kernels_refuse_bad_buffers(jacobians, hessians):
    for kernel, width in ((jacobians["cython"]._kernels["jacobian"], 9),
                          (hessians["cython"]._kernels["hessian_values"], 6)):
        args = (RNG.normal(size=(4, 3)), RNG.normal(size=(1, 3 if width == 9 else 2)))
        with pytest.raises(ValueError, match="expected 2 arguments"):
            kernel(args[:1], (np.zeros((4, width)),), 4, 1)
        with pytest.raises(ValueError, match="output 0 has shape"):
            kernel(args, (np.zeros((4, width + 1)),), 4, 1)
        with pytest.raises(TypeError, match="native float64"):
            kernel((args[0].astype(np.float32), args[1]), (np.zeros((4, width)),), 4, 1)
        with pytest.raises(ValueError, match="has shape"):
            kernel(args, (np.zeros((4, width)),), 5, 1)
        with pytest.raises(ValueError, match="non-negative"):
            kernel(args, (np.zeros((4, width)),), -1, 1)
        with pytest.raises(TypeError):
            kernel(list(args), (np.zeros((4, width)),), 4, 1)
    with pytest.raises(KeyError, match="no single-buffer kernel"):
        jacobians["cython"]._module.make_entry("function_and_jacobian", print)


def test_the_runtime_refuses_what_is_not_a_kernel_library(tmp_path):
    runtime = build.kernel_runtime(symjac.build.cache.private_dir(symjac.build.cache.cache_dir()))
    with pytest.raises(ImportError, match="cannot load the kernel library"):
        runtime.Model(str(tmp_path / "missing.so"))
    c_file, library = tmp_path / "other.c", tmp_path / "other.so"
    c_file.write_text("int not_a_model = 1;\n")
    symjac.build.toolchain.compile_extension([c_file], library, ("-O0",))
    with pytest.raises(ImportError, match="not a symjac kernel library"):
        runtime.Model(str(library))
    assert runtime.ABI == 1


def test_standalone_sources_stay_full_cython_modules():
    derivative, _ = symjac.api.build_derivative(model, (), {"x": 3, "k": 3}, None)
    programs = (symjac.emit.simplify.simplify(derivative),)
    standalone = render.render(derivative, programs, "cython", standalone=True)
    library = render.render(derivative, programs, "cython")
    assert not standalone.is_library and source_suffix(standalone) == ".pyx" and "cdef class _Entry" in standalone.text
    assert library.is_library and source_suffix(library) == ".c" and "ARGUMENT_NAMES" in library.metadata
    assert library.content_hash != standalone.content_hash


def _runtime_code(text):
    """The Cython runtime in ``text``: from its constants to the end of Model.make_entry."""
    start = text.index("# Calls beyond these counts")
    end = text.index("        return entry\n", start) + len("        return entry\n")
    return text[start:end]


def test_one_runtime_source_for_the_kernel_runtime_and_standalone_modules():
    """The buffer checks, the checked batch call and the compiled common call
    are one text (templates/_runtime.pyx.j2) in both shipped copies; each
    copy adds only how it finds a model's descriptor."""
    derivative, _ = symjac.api.build_derivative(model, (), {"x": 3, "k": 3}, None)
    standalone = render.render(derivative, (symjac.emit.simplify.simplify(derivative),), "cython", standalone=True)
    shared = _runtime_code(symjac.emit.source.runtime_source())
    assert _runtime_code(standalone.text) == shared
    for text in (standalone.text, symjac.emit.source.runtime_source()):
        for definition in ("cdef int _check_view(", "cdef class Kernel:", "cdef class _Entry:", "def make_entry("):
            assert text.count(definition) == 1, definition


def test_the_runtime_and_the_embedded_call_convention_define_different_names():
    """A standalone module holds both at module level: a name defined twice
    would silently pick one definition in C and the other from Python."""
    runtime = set(re.findall(r"^(?:cdef (?:class |[\w ]+?[ *]+)|def |class )(\w+)\s*[(:]", symjac.emit.source.runtime_source(), re.M))
    calling = Path(symjac.__file__).parent / "run" / "calling.py"
    convention = {node.name for node in ast.parse(calling.read_text()).body
                  if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert {"_check_view", "Kernel", "_Entry", "Model", "_locate"} <= runtime
    assert not runtime & convention
