"""One test per error: the type raised and the key words of its message."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symjac
from symjac.errors import BuildError


def test_python_if_on_traced_value_suggests_where():
    def f(x):
        if x[0] > 0:
            return x
        return -x

    with pytest.raises(symjac.TracingError, match="np.where") as info:
        symjac.trace(f, 2)
    assert "control flow" in str(info.value)
    assert "test_errors.py" in str(info.value)  # names the user's source line


def test_while_on_traced_value():
    def f(x):
        while x[0] < 1:
            x = x * 2
        return x

    with pytest.raises(symjac.TracingError, match="np.where"):
        symjac.trace(f, 2)


def test_math_function_suggests_numpy():
    with pytest.raises(symjac.TracingError, match=r"np\.sin"):
        symjac.trace(lambda x: math.sin(x[0]), 2)


def test_float_conversion_suggests_numpy():
    with pytest.raises(symjac.TracingError, match="Python number"):
        symjac.trace(lambda x: float(x[0]) * x, 2)


def test_unsupported_numpy_function_is_named():
    with pytest.raises(symjac.TracingError, match=r"np\.linalg\.eigh .*form=\"array\""):
        symjac.trace(lambda a: np.linalg.eigh(a), (2, 2))
    with pytest.raises(symjac.TracingError, match=r"np\.percentile"):
        symjac.trace(lambda x: np.percentile(x, 30), 3)


def test_unsupported_ufunc_is_named():
    with pytest.raises(symjac.TracingError, match=r"np\.spacing"):
        symjac.trace(lambda x: np.spacing(x), 3)


def test_storing_traced_value_into_plain_array_suggests_zeros_like():
    def f(x):
        out = np.zeros(2)
        out[0] = x[0]
        return out

    with pytest.raises(symjac.TracingError, match="zeros_like"):
        symjac.trace(f, 2)


def test_indexing_with_traced_value():
    with pytest.raises(symjac.TracingError, match="Indexing with a traced value"):
        symjac.trace(lambda x: x[x[0]], 2)


def test_tracing_error_is_also_a_type_error():
    assert issubclass(symjac.TracingError, TypeError)
    assert issubclass(symjac.ShapeError, ValueError)
    assert issubclass(symjac.InvalidNameError, ValueError)
    assert issubclass(symjac.BuildError, RuntimeError)


@pytest.mark.parametrize(
    "shapes, named, message",
    [
        ((), {}, "no shape given for argument"),
        ((3, 3, 3), {}, "3 shapes given"),
        ((3,), {"z": 2}, "not an argument"),
        ((3,), {"y": 2}, "given twice"),
        ((-1, 3), {}, "positive"),
        (("3", 3), {}, "int or a tuple"),
    ],
)
def test_bad_shape_specifications(shapes, named, message):
    with pytest.raises(symjac.ShapeError, match=message):
        symjac.jacobian(lambda y, k: y * k[0], *shapes, backend="numpy", **named)


@pytest.mark.parametrize("wrt, message", [("q", "names no argument"), (5, "out of range"), (("y", "y"), "twice"), (1.5, "name")])
def test_bad_wrt(wrt, message):
    with pytest.raises(symjac.ShapeError, match=message):
        symjac.jacobian(lambda y, k: y * k[0], 3, 3, wrt=wrt, backend="numpy")


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        symjac.jacobian(lambda y: y, 3, backend="fortran")


@pytest.mark.parametrize(
    "name, message",
    [
        ("_private", "reserved for generated code"),
        ("x; import os", "use ASCII letters, digits and underscores"),
        ("int", "is a keyword or a name the generated code uses"),
        ("lambda", "is a keyword or a name the generated code uses"),
        ("\u0443", "use ASCII letters, digits and underscores"),  # Cyrillic u: a Python identifier, not ASCII
        ("a" * 65, "longer than 64 characters"),
        (3, "must be a string"),
    ],
)
def test_argument_names_must_be_safe_identifiers(name, message):
    from symjac.front.names import check_identifier

    with pytest.raises(symjac.InvalidNameError, match=f"argument name .*{message}"):
        check_identifier(name, "argument name")


@pytest.mark.parametrize("name", ["_private", "int", "\u0443", "a" * 65])
def test_unsafe_parameter_names_of_a_real_function_are_refused(name):
    """The same names as real parameters of a def (all legal Python): refused when tracing, by name."""
    namespace = {}
    exec(f"def f({name}):\n    return {name}", namespace)
    with pytest.raises(symjac.InvalidNameError, match=r"argument name '?" + re.escape(name[:20])):
        symjac.trace(namespace["f"], 2)


def test_safe_names_pass_unchanged():
    from symjac.front.names import check_identifier

    for name in ("x", "y2", "state_vector", "a" * 64):
        assert check_identifier(name, "argument name") == name


def test_reserved_argument_name_rejected_when_tracing():
    def f(sin):
        return sin

    with pytest.raises(symjac.InvalidNameError, match="sin"):
        symjac.trace(f, 2)


def test_call_with_wrong_trailing_shape_names_argument_and_shapes(backend):
    jac = symjac.jacobian(lambda y, k: y * k[0], y=3, k=2, backend=backend)
    with pytest.raises(ValueError, match=r"'k'.*\(2,\).*\(3,\)"):
        jac(np.ones(3), np.ones(3))
    with pytest.raises(TypeError, match="expected 2 arguments"):
        jac(np.ones(3))
    with pytest.raises(TypeError, match="complex"):
        jac(np.ones(3) + 1j, np.ones(2))
    with pytest.raises(TypeError, match="real numbers"):
        jac(np.array(["a", "b", "c"]), np.ones(2))
    with pytest.raises(ValueError, match="do not broadcast"):
        jac(np.ones((4, 3)), np.ones((5, 2)))


def test_build_error_carries_command_and_log(tmp_path, monkeypatch):
    from symjac.build import builder as build
    from symjac.emit import render

    source = render.Source("cython", "this is not cython(\n", "0" * 64, ("jacobian",))
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BuildError, match=r"Cython reported \d+ error") as info:
        build.load(source)
    assert info.value.command is not None
    assert "Cython" in str(info.value)
    assert info.value.log  # the compiler's own output is kept


def test_division_by_a_constant_zero_is_a_tracing_error():
    with pytest.raises(symjac.TracingError, match="division by a constant zero"):
        symjac.jacobian(lambda x: x / 0.0, 2, backend="numpy")


# ---------------------------------------------------------------------------
# issue 21: errors a new user meets in the first hour


def _indexes_y2(y, k):
    return np.array([k[0] * y[0], y[2]])


def test_indexing_past_the_declared_shape_names_argument_shape_and_line():
    with pytest.raises(symjac.DeclaredShapeError) as info:
        symjac.jacobian(_indexes_y2, y=2, k=1, backend="numpy")
    message = str(info.value)
    assert "argument 'y', declared with shape (2,)" in message and "y=3" in message
    assert "test_errors.py" in message and "in _indexes_y2" in message  # the user's line
    assert isinstance(info.value, IndexError) and isinstance(info.value, symjac.ShapeError)


def pairs(x, y):
    return x * y[0] + y[1]


@pytest.fixture(scope="module")
def keyword_jac(request):
    return {backend: symjac.jacobian(pairs, x=2, y=2, backend=backend, verbose=False) for backend in ("numpy", "cython")}


@pytest.mark.parametrize("engine", ["numpy", "cython"])
@pytest.mark.parametrize("call, message", [
    (lambda j, x, y: j(x=x, z=y), "unexpected keyword argument 'z'; its arguments are x, y"),
    (lambda j, x, y: j(x, x=x, y=y), "got argument 'x' twice"),
    (lambda j, x, y: j(y=y), "missing argument(s) x; its arguments are x, y"),
    (lambda j, x, y: j.values(x, q=y), "unexpected keyword argument 'q'"),
])
def test_a_wrong_keyword_is_an_argument_error_naming_the_arguments(keyword_jac, engine, call, message):
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    with pytest.raises(symjac.ArgumentError) as info:
        call(keyword_jac[engine], x, y)
    assert message in str(info.value) and "of pairs" in str(info.value)
    assert isinstance(info.value, TypeError)


def test_printer_refusals_name_the_function_and_the_fix(backend):
    import sympy

    def special(x):
        return sympy.besselj(0, x[0]) * x[1]

    with pytest.raises(symjac.PrinterError) as info:
        symjac.jacobian(special, x=2, backend=backend)
    message = str(info.value)
    assert "besselj" in message and "strict" not in message and "pass its value as an argument" in message
    assert isinstance(info.value, NotImplementedError)


def test_an_unwritable_cache_directory_is_a_cache_error(tmp_path, monkeypatch):
    from symjac.build import builder as build
    from symjac.build import cache as cache_module

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    cache.chmod(0o500)  # read-only for its owner
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    monkeypatch.setattr(build, "_loaded", {})
    if os.geteuid() == 0:
        # root may write anywhere: make creating the build folder fail the way it does for a user
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(cache))
        monkeypatch.setattr(cache_module.tempfile, "mkdtemp", refuse)
    try:
        with pytest.raises(symjac.CacheError) as info:
            symjac.jacobian(pairs, x=2, y=2, backend="cython", verbose=False)
    finally:
        cache.chmod(0o700)
    message = str(info.value)
    assert str(cache) in message and "SYMJAC_CACHE_DIR" in message and "writable" in message
    assert isinstance(info.value, PermissionError)


def test_the_command_line_names_the_users_file(tmp_path):
    model = tmp_path / "model.py"
    model.write_text("import numpy as np\n\ndef spring(x):\n    return np.sin(x)\n")
    done = subprocess.run([sys.executable, "-m", "symjac", "codegen", f"{model}:nope", "--arg", "x=2"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(symjac.__file__).parent.parent)})
    assert done.returncode == 1
    assert f"'nope' is not a function in '{model}' (its functions: spring)" in done.stderr, done.stderr
    assert "_symjac_target_" not in done.stderr
