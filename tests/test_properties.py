"""Property tests (issue 6): random batch shapes, broadcasting layouts,
strides and dtypes through both backends, checked against each other and
against complex-step derivatives of the original Python function; and
properties of the pipeline (CSE preserves values, the sparsity pattern covers
every non-zero, rendering is deterministic).

Three fixed functions are compiled once per module (``lorenz``, shared with
test_build.py and test_trust.py through the run's cache; ``mat``, a matrix
argument with tuple outputs and a tuple ``wrt``; ``scal``, a scalar argument).
Random functions are only traced, simplified, rendered and run on the numpy
backend: no compiler.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import symjac
from symjac.api import build_derivative, generate
from symjac.emit.render import render
from symjac.derive.derivatives import DERIVATIVES
from symjac.emit.simplify import simplify

KINDS = DERIVATIVES["jacobian"].all_kernels

from oracles import complex_step_jacobian

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci")


# ---------------------------------------------------------------------------
# the fixed functions


def lorenz(u, p):
    return np.array([p[0] * (u[1] - u[0]), u[0] * (p[1] - u[2]) - u[1], u[0] * u[1] - p[2] * u[2]])


def mat(A, v):
    w = A @ v
    return np.sin(w) * v[0], np.exp(A / 2).sum(axis=0) * v - A[1] * w[0]


def scal(t, x):
    return np.array([np.cos(t * x[0]) + t ** 3, x[1] / (1 + t * t), x[0] * x[1]])


# name -> (function, named shapes, wrt, wrt indices, wrt is a tuple)
FUNCTIONS = {
    "lorenz": (lorenz, {"u": (3,), "p": (3,)}, "u", (0,), False),
    "mat": (mat, {"A": (2, 3), "v": (3,)}, ("A", "v"), (0, 1), True),
    "scal": (scal, {"t": (), "x": (2,)}, "t", (0,), False),
}


@pytest.fixture(scope="module")
def compiled():
    jacobians = {}
    for name, (function, shapes, wrt, _, _) in FUNCTIONS.items():
        for backend in ("numpy", "cython"):
            jacobians[name, backend] = symjac.jacobian(function, wrt=wrt, backend=backend, **shapes)
    return jacobians


DTYPES = ["float64", "float32", "int32", "int64", "bool", ">f8"]
LAYOUTS = ["full", "unbatched", "ones", "suffix"]
STRIDES = ["contiguous", "reversed", "transposed", "sliced", "broadcast"]


def _values(rng, shape, dtype):
    values = rng.uniform(-2.0, 2.0, size=shape)
    kind = np.dtype(dtype).kind
    if kind == "b":
        return values > 0
    if kind in "iu":
        return np.round(values * 1.5).astype(dtype)
    return values.astype(dtype)


def _with_layout(array, stride, axis):
    """A view of ``array``'s values with the requested memory layout ("broadcast"
    instead repeats the first slice along ``axis`` through a zero stride)."""
    if array.ndim == 0 or array.size == 0:
        return array
    axis = axis % array.ndim
    if stride == "broadcast":
        return np.broadcast_to(array.take([0], axis=axis), array.shape)
    if stride == "reversed":
        view = np.flip(np.flip(array, axis).copy(), axis)
    elif stride == "transposed":
        order = tuple(reversed(range(array.ndim)))
        view = np.ascontiguousarray(array.transpose(order)).transpose(order)
    elif stride == "sliced":
        shape = list(array.shape)
        shape[axis] *= 2
        big = np.zeros(shape, dtype=array.dtype)
        index = [slice(None)] * array.ndim
        index[axis] = slice(None, None, 2)
        big[tuple(index)] = array
        view = big[tuple(index)]
    else:
        view = array
    assert np.array_equal(view, array) and view.dtype == array.dtype
    return view


@st.composite
def call_cases(draw, name):
    """Arguments for FUNCTIONS[name]: batch shape, per-argument layout, dtype and strides."""
    shapes = FUNCTIONS[name][1]
    batch = tuple(draw(st.lists(st.integers(0, 3), min_size=0, max_size=3)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    args, described = [], []
    for argument, core in shapes.items():
        layout = draw(st.sampled_from(LAYOUTS))
        if layout == "full":
            arg_batch = batch
        elif layout == "unbatched":
            arg_batch = ()
        elif layout == "ones":
            mask = draw(st.lists(st.booleans(), min_size=len(batch), max_size=len(batch)))
            arg_batch = tuple(1 if one else extent for one, extent in zip(mask, batch))
        else:
            arg_batch = batch[draw(st.integers(0, len(batch))):]
        dtype = draw(st.sampled_from(DTYPES))
        stride = draw(st.sampled_from(STRIDES))
        axis = draw(st.integers(-3, 2))
        array = _with_layout(_values(rng, arg_batch + core, dtype), stride, axis)
        args.append(array)
        described.append(f"{argument}: shape {array.shape} {array.dtype.str} strides {array.strides} ({stride})")
    use_out = draw(st.booleans())
    threads = draw(st.sampled_from([None, 1, 2]))
    return args, use_out, threads, described


def _oracle(name, args):
    """Complex-step Jacobian at every point of the broadcast batch, nested like symjac's result."""
    function, shapes, _, wrt, wrt_is_tuple = FUNCTIONS[name]
    cores = list(shapes.values())
    batches = [a.shape[:a.ndim - len(core)] for a, core in zip(args, cores)]
    batch = np.broadcast_shapes(*batches)
    floats = [np.broadcast_to(np.asarray(a, dtype=np.float64), batch + core) for a, core in zip(args, cores)]
    points = {}
    for index in np.ndindex(*batch):
        # C order: oracles.complex_step_jacobian perturbs x through x.reshape(-1), which is a
        # copy (so the perturbation is lost) when x is not C-contiguous
        point = [np.array(a[index], order="C") for a in floats]
        points[index] = [complex_step_jacobian(function, point, j) for j in wrt]
    return batch, points


def _flat_blocks(name, result):
    """symjac's nested result -> {(output, wrt position): array}."""
    _, _, _, wrt, wrt_is_tuple = FUNCTIONS[name]
    rows = result if isinstance(result, tuple) and name == "mat" else (result,)
    blocks = {}
    for i, row in enumerate(rows):
        cells = row if wrt_is_tuple else (row,)
        for j, cell in enumerate(cells):
            blocks[i, j] = cell
    return blocks


def _oracle_block(name, per_wrt, i, j):
    jac = per_wrt[j]
    return jac[i] if isinstance(jac, tuple) else jac


def _empty_like_result(name, result):
    if isinstance(result, tuple):
        return tuple(_empty_like_result(name, item) for item in result)
    return np.full_like(result, np.nan)


def _check_call(name, compiled, case):
    args, use_out, threads, described = case
    batch, points = _oracle(name, args)
    results = {}
    for backend in ("numpy", "cython"):
        jac = compiled[name, backend]
        result = jac(*args, num_threads=threads)
        if use_out:
            out = _empty_like_result(name, result)
            returned = jac(*args, out=out, num_threads=threads)
            assert returned is out
            for key, block in _flat_blocks(name, out).items():
                np.testing.assert_array_equal(block, _flat_blocks(name, result)[key], err_msg=f"{backend} out=")
        results[backend] = _flat_blocks(name, result)
    for (i, j), block in results["cython"].items():
        numpy_block = results["numpy"][i, j]
        assert block.dtype == np.float64 and numpy_block.dtype == np.float64
        assert block.shape == numpy_block.shape
        assert block.shape[:len(batch)] == batch, (block.shape, batch, described)
        np.testing.assert_allclose(block, numpy_block, rtol=1e-13, atol=1e-13,
                                   err_msg=f"cython vs numpy, block {(i, j)}: {described}")
        for index, per_wrt in points.items():
            expected = _oracle_block(name, per_wrt, i, j)
            assert block[index].shape == expected.shape
            np.testing.assert_allclose(block[index], expected, rtol=1e-11, atol=1e-11,
                                       err_msg=f"vs complex step, block {(i, j)} at {index}: {described}")


@given(case=call_cases("lorenz"))
def test_lorenz_both_backends_match_complex_step(compiled, case):
    _check_call("lorenz", compiled, case)


@given(case=call_cases("mat"))
def test_matrix_tuple_outputs_both_backends_match_complex_step(compiled, case):
    _check_call("mat", compiled, case)


@given(case=call_cases("scal"))
def test_scalar_argument_both_backends_match_complex_step(compiled, case):
    _check_call("scal", compiled, case)


# ---------------------------------------------------------------------------
# the pipeline, on random functions (numpy backend only: nothing compiled)

_UNARY = {
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "exp": lambda a: np.exp(a / 4),
    "square": lambda a: a * a,
    "neg": np.negative,
    "soft": lambda a: np.sqrt(1 + a * a),
    "cube": lambda a: a ** 3,
}
_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": lambda a, b: a / (2 + b * b),
}
_SIZE = 4

leaves = st.one_of(
    st.integers(0, _SIZE - 1).map(lambda i: ("x", i)),
    st.sampled_from([0.5, 2.0, -1.5, 3.0]).map(lambda c: ("c", c)),
)
expressions = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.tuples(st.sampled_from(sorted(_UNARY)), children),
        st.tuples(st.sampled_from(sorted(_BINARY)), children, children),
    ),
    max_leaves=10,
)


def _evaluate(tree, x):
    head = tree[0]
    if head == "x":
        return x[tree[1]]
    if head == "c":
        return tree[1] + 0 * x[0]  # a constant output still depends (trivially) on nothing
    if head in _UNARY:
        return _UNARY[head](_evaluate(tree[1], x))
    return _BINARY[head](_evaluate(tree[1], x), _evaluate(tree[2], x))


def _random_function(trees):
    def random_function(x):
        return np.stack([_evaluate(tree, x) for tree in trees])

    return random_function


random_functions = st.lists(expressions, min_size=1, max_size=4).map(_random_function)
points = st.lists(st.floats(-2.0, 2.0, allow_nan=False, allow_subnormal=False), min_size=_SIZE, max_size=_SIZE)


def _numeric(expr, env):
    value = expr.xreplace(env)
    return complex(value.evalf(30)) if value.free_symbols == set() else None


def _check_cse(derivative, x_values):
    """Every kernel's straight-line program computes the unsimplified entries."""
    traced = derivative.traced
    env = {}
    for argument, values in zip(traced.arguments, x_values):
        env.update({symbol: sympy.Float(float(value), 30)
                    for symbol, value in zip(argument.symbols.flat, np.ravel(values))})
    for kind in KINDS:
        program = simplify(derivative, kind)
        # the unsimplified entries of each buffer: function values, then Jacobian blocks
        entries = [] if kind == "jacobian" else \
            [[(flat, e) for flat, e in enumerate(output.flat) if e != 0] for output in traced.outputs]
        if kind != "function":
            entries += [block.entries for block in derivative.blocks]
        assert len(entries) == len(program.buffers), kind
        expected = {(b, flat): e for b, found in enumerate(entries) for flat, e in found}
        assert sorted((b, flat) for b, flat, _ in program.results) == sorted(expected), kind
        scope = dict(env)
        for symbol, expr in program.temporaries:
            assert symbol not in scope, f"temporary {symbol} assigned twice"
            scope[symbol] = expr.xreplace(scope).evalf(30)
        for b, flat, expr in program.results:
            got = complex(expr.xreplace(scope).evalf(30))
            want = complex(expected[b, flat].xreplace(env).evalf(30))
            assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (kind, b, flat, got, want)


@given(function=random_functions, x=points)
def test_cse_preserves_values_of_random_functions(function, x):
    derivative, _ = build_derivative(function, (), {"x": _SIZE}, None)
    _check_cse(derivative, [np.array(x)])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_cse_preserves_values_of_the_fixed_functions(name, seed):
    function, shapes, wrt, _, _ = FUNCTIONS[name]
    derivative, _ = _fixed_derivative(name)
    rng = np.random.default_rng(seed)
    _check_cse(derivative, [rng.uniform(-2, 2, size=shape) for shape in shapes.values()])


_DERIVATIVES = {}


def _fixed_derivative(name):
    if name not in _DERIVATIVES:
        function, shapes, wrt, _, _ = FUNCTIONS[name]
        _DERIVATIVES[name] = build_derivative(function, (), shapes, wrt)
    return _DERIVATIVES[name]


@given(function=random_functions, x=points)
def test_sparsity_covers_every_nonzero(function, x):
    jac = symjac.jacobian(function, x=_SIZE, backend="numpy")
    point = np.array(x)
    oracle = complex_step_jacobian(function, [point], 0)
    J = jac(point)
    assert J.shape == oracle.shape
    missing = (oracle != 0) & ~jac.sparsity
    assert not missing.any(), f"non-zeros outside the sparsity pattern at {np.argwhere(missing).tolist()}"
    assert np.all(J[~jac.sparsity] == 0.0), "entries outside the pattern must be exactly zero"
    np.testing.assert_allclose(J, oracle, rtol=1e-11, atol=1e-11)
    values = jac.values(point)
    np.testing.assert_array_equal(values, J[jac.sparsity])
    assert jac.nonzeros == int(jac.sparsity.sum())


@settings(max_examples=25)
@given(function=random_functions, backend=st.sampled_from(["cython", "numpy"]), standalone=st.booleans())
def test_rendering_twice_gives_identical_bytes(function, backend, standalone):
    first = generate(function, (), {"x": _SIZE}, wrt=None, backend=backend, kinds=KINDS, standalone=standalone)
    second = generate(function, (), {"x": _SIZE}, wrt=None, backend=backend, kinds=KINDS, standalone=standalone)
    assert first.source.text.encode() == second.source.text.encode()
    assert first.source.content_hash == second.source.content_hash
    again = render(first.derivative, first.programs, backend, standalone=standalone)
    assert again.text.encode() == first.source.text.encode()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_fixed_functions_render_identically_twice(name, compiled):
    function, shapes, wrt, _, _ = FUNCTIONS[name]
    for backend in ("cython", "numpy"):
        texts = {generate(function, (), shapes, wrt=wrt, backend=backend, kinds=("jacobian",)).source.text
                 for _ in range(2)}
        assert len(texts) == 1
        assert texts == {compiled[name, backend].source}


# ---------------------------------------------------------------------------
# every derivative kind on random smooth programs (numpy backend), vs oracles


def _scalar(function):
    def objective(x):
        return np.sum(function(x) ** 2) / 2.0

    return objective


@settings(max_examples=25)
@given(function=random_functions, x=points, v=points)
def test_every_kind_matches_its_oracle_on_random_programs(function, x, v):
    point, v = np.array(x), np.array(v)
    J = complex_step_jacobian(function, [point], 0)
    assume(np.all(np.isfinite(J)) and np.abs(J).max() < 1e6)
    objective = _scalar(function)
    scale = max(1.0, np.abs(J).max())
    u = np.linspace(-1.0, 1.0, J.shape[0])
    jvp = symjac.jvp(function, x=_SIZE, backend="numpy")
    vjp = symjac.vjp(function, x=_SIZE, backend="numpy")
    np.testing.assert_allclose(jvp(point, v), J @ v, rtol=1e-9, atol=1e-9 * scale * max(1.0, np.abs(v).max()))
    np.testing.assert_allclose(vjp(point, u), u @ J, rtol=1e-9, atol=1e-9 * scale)
    gradient = symjac.gradient(objective, x=_SIZE, backend="numpy")
    exact_gradient = complex_step_jacobian(objective, [point], 0)
    np.testing.assert_allclose(gradient(point), exact_gradient, rtol=1e-9,
                               atol=1e-9 * max(1.0, np.abs(exact_gradient).max()))
    hessian = symjac.hessian(objective, x=_SIZE, backend="numpy")
    H = hessian(point)
    np.testing.assert_array_equal(H, H.T)  # symmetric by construction, exactly
    h = 1e-5  # central differences of the complex-step gradient: an oracle independent of symjac
    numeric = np.array([(complex_step_jacobian(objective, [point + h * e], 0)
                         - complex_step_jacobian(objective, [point - h * e], 0)) / (2 * h) for e in np.eye(_SIZE)])
    assume(np.all(np.isfinite(numeric)))
    np.testing.assert_allclose(H, numeric, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(numeric).max()))
    assert not (hessian.sparsity == False)[H != 0].any()  # noqa: E712 - the pattern covers every non-zero
