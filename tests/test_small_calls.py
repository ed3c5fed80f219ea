"""The compiled common call of the kernel runtime (``make_entry``).

With the Cython backend a call whose arguments are C-contiguous native float64
ndarrays of their core shapes (the batched ones with the same batch
dimensions), without ``out=``, is run in compiled code; every other call falls
back to the Python call convention (``_calling.call``). Both must give the
numbers of the numpy backend and of the general path, the same shapes and
nesting, and the same errors. No timing here: benchmarks/small_calls.py
measures the cost.
"""

import numpy as np
import pytest

import symjac
from symjac.run import calling as _calling

from oracles import complex_step_jacobian

RNG = np.random.default_rng(2026)
SIZES = (1, 2, 3, 7, 100)
BACKENDS = ("cython", "numpy")


def model(x, k):
    return np.array([k[0] * x[0] * x[1] + np.sin(x[2]), x[1] ** 2 - k[1] * np.exp(x[0]), x[0] * x[2] * k[2]])


def pair(x, k):  # a tuple of outputs; with wrt=("x", "k") four blocks
    return k[0] * x * x[0], np.sum(x ** 3) * k[1]


def scalar(x, k):
    return k[0] * np.sum(x ** 2 * np.roll(x, 1)) + np.prod(np.cos(x))


def sparse(x, k):  # d/dx is diagonal: the caller hands that block over zeroed
    return x ** 2 * k[0] + k[1], np.sum(x) * k


def layer(x, W, s):  # a matrix and a scalar argument
    return np.tanh(W @ x) * s


@pytest.fixture(scope="module")
def built():
    kernels = ("jacobian", "function", "function_and_jacobian")
    made = {}
    for backend in BACKENDS:
        made[backend] = {
            "jacobian": symjac.jacobian(model, x=3, k=3, kernels=kernels, backend=backend),
            "pair": symjac.jacobian(pair, x=3, k=2, wrt=("x", "k"), kernels=kernels, backend=backend),
            "sparse": symjac.jacobian(sparse, x=8, k=3, wrt=("x", "k"), kernels=kernels, backend=backend),
            "layer": symjac.jacobian(layer, x=3, W=(4, 3), s=(), kernels=kernels, backend=backend),
            "hessian": symjac.hessian(scalar, x=3, k=2, backend=backend),
            "hessian_pair": symjac.hessian(scalar, x=3, k=2, wrt=("x", "k"), backend=backend),
            "gradient": symjac.gradient(scalar, x=3, k=2, backend=backend),
            "jvp": symjac.jvp(model, x=3, k=3, backend=backend),
            "vjp": symjac.vjp(model, x=3, k=3, backend=backend),
        }
    return made


# (object, method) -> argument core shapes
CALLS = {
    ("jacobian", "__call__"): ((3,), (3,)),
    ("jacobian", "values"): ((3,), (3,)),
    ("jacobian", "function"): ((3,), (3,)),
    ("jacobian", "function_and_jacobian"): ((3,), (3,)),
    ("pair", "__call__"): ((3,), (2,)),
    ("pair", "values"): ((3,), (2,)),
    ("pair", "function_and_jacobian"): ((3,), (2,)),
    ("sparse", "__call__"): ((8,), (3,)),
    ("sparse", "function_and_jacobian"): ((8,), (3,)),
    ("layer", "__call__"): ((3,), (4, 3), ()),
    ("layer", "values"): ((3,), (4, 3), ()),
    ("hessian", "__call__"): ((3,), (2,)),
    ("hessian", "values"): ((3,), (2,)),
    ("hessian_pair", "__call__"): ((3,), (2,)),
    ("hessian_pair", "values"): ((3,), (2,)),
    ("gradient", "__call__"): ((3,), (2,)),
    ("jvp", "__call__"): ((3,), (3,), (3,)),
    ("vjp", "__call__"): ((3,), (3,), (3,)),
}
def _kind(obj, method):
    return {"__call__": obj.KIND, "values": getattr(obj, "PACKED", None)}.get(method, method)


def _same(got, expected, exact=False):
    """Same nesting, shapes, dtype and numbers (bit for bit when ``exact``)."""
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected)
        for a, b in zip(got, expected):
            _same(a, b, exact)
        return
    assert type(got) is np.ndarray and got.dtype == np.float64
    assert got.shape == expected.shape and got.flags.c_contiguous and got.flags.writeable
    if exact:
        assert np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def _flat(result):
    if isinstance(result, tuple):
        return [array for item in result for array in _flat(item)]
    return [result]


def _general(obj, method, args):
    """The same compiled kernel through the Python call convention."""
    kind = _kind(obj, method)
    return _calling.call(obj._kernels[kind], obj.signature, kind, args)


def _spy(obj, method):
    """A fresh compiled entry of ``obj``'s kind whose fallback records its calls."""
    kind = _kind(obj, method)
    calls = []

    def fallback(args, out, num_threads):
        calls.append(args)
        return obj._call(kind, args, out, num_threads)

    entry = obj._module.MODEL.make_entry(kind, fallback, obj.signature,
                                         lambda n, num_threads: _calling.thread_count(obj.signature, n, num_threads))
    return entry, calls


def _points(shapes, n, broadcast=()):
    """Arguments with batch (n,) in front, except those numbered in ``broadcast``."""
    return [RNG.normal(size=shape if number in broadcast or n is None else (n,) + shape)
            for number, shape in enumerate(shapes)]


@pytest.mark.parametrize("call", list(CALLS), ids="-".join)
@pytest.mark.parametrize("n", (None,) + SIZES)
def test_common_calls_match_the_numpy_backend_and_the_general_path(built, call, n):
    name, method = call
    shapes = CALLS[call]
    cython, numpy_ = built["cython"][name], built["numpy"][name]
    entry, calls = _spy(cython, method)
    for broadcast in ((), tuple(range(1, len(shapes)))):
        args = _points(shapes, n, broadcast)
        got = getattr(cython, method)(*args)
        _same(got, getattr(numpy_, method)(*args))
        _same(got, _general(cython, method, args), exact=True)
        _same(entry(*args), got, exact=True)
    assert not calls  # all of them were common calls


@pytest.mark.parametrize("n", SIZES)
def test_jacobians_match_complex_step(built, n):
    jac = built["cython"]["jacobian"]
    X, K = RNG.normal(size=(n, 3)), RNG.normal(size=3)
    expected = np.stack([complex_step_jacobian(model, (x, K), 0) for x in X])
    np.testing.assert_allclose(jac(X, K), expected, rtol=1e-12, atol=1e-12)


def test_several_batch_dimensions_and_a_batched_parameter(built):
    jac, reference = built["cython"]["jacobian"], built["numpy"]["jacobian"]
    entry, calls = _spy(jac, "__call__")
    X, K = RNG.normal(size=(2, 5, 3)), RNG.normal(size=(2, 5, 3))
    for args in ((X, K), (X, K[0, 0]), (X[0, 0], K)):
        _same(entry(*args), reference(*args))
    assert not calls


@pytest.mark.parametrize("make", [
    lambda X, K: (np.asfortranarray(X), K),
    lambda X, K: (np.repeat(X, 2, axis=0)[::2], K),
    lambda X, K: (X, np.repeat(K, 2)[::2]),
    lambda X, K: (X.astype(np.int64), K),
    lambda X, K: (X.astype(np.float32), K.astype(np.float32)),
    lambda X, K: (X.astype(">f8"), K),
    lambda X, K: (X.tolist(), K),
    lambda X, K: (X, list(K)),
    lambda X, K: (X, np.broadcast_to(K, X.shape)),
    lambda X, K: (X, K[None, :]),
    lambda X, K: (X, np.tile(K, (2, len(X), 1))),
    lambda X, K: (X[:, None, :], np.tile(K, (2, 1))),
    lambda X, K: (X.view(np.matrix), K),
], ids=["fortran", "strided", "strided-parameter", "int", "float32", "big-endian", "list", "list-parameter",
        "broadcast-view", "batch-of-one-parameter", "batches-of-different-lengths", "broadcasting-batches",
        "subclass"])
@pytest.mark.parametrize("n", (1, 3, 7))
def test_unusual_arguments_take_the_general_path_with_the_same_numbers(built, make, n):
    jac, reference = built["cython"]["jacobian"], built["numpy"]["jacobian"]
    entry, calls = _spy(jac, "__call__")
    X, K = RNG.normal(size=(n, 3)), RNG.normal(size=3)
    args = make(X, K)
    expected = reference(*args)
    _same(jac(*args), expected)
    _same(entry(*args), expected)
    _same(jac.function_and_jacobian(*args), built["numpy"]["jacobian"].function_and_jacobian(*args))
    if n > 1:
        assert len(calls) == 1


def test_integer_arguments(built):
    jac, reference = built["cython"]["jacobian"], built["numpy"]["jacobian"]
    X, K = np.arange(21).reshape(7, 3), np.array([1, 2, 3])
    for args in ((X, K), (X[0], K), (X, K.astype(np.float64)), (X.astype(np.float64), K)):
        _same(jac(*args), reference(*args))
        _same(jac.values(*args), reference.values(*args))


def test_empty_batches(built):
    for name, method in (("jacobian", "__call__"), ("pair", "function_and_jacobian"), ("hessian", "values")):
        shapes = CALLS[(name, method)]
        args = [np.empty((0,) + shapes[0])] + [RNG.normal(size=shape) for shape in shapes[1:]]
        _same(getattr(built["cython"][name], method)(*args), getattr(built["numpy"][name], method)(*args))


def test_zero_size_and_zero_dimensional_arguments(built):
    layer, reference = built["cython"]["layer"], built["numpy"]["layer"]
    entry, calls = _spy(layer, "__call__")
    X, W = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    for s in (np.array(1.5), np.full(4, 1.5)):
        _same(entry(X, W, s), reference(X, W, s))
    assert not calls
    for s in (1.5, np.float64(1.5), [1.5] * 4):
        _same(layer(X, W, s), reference(X, W, s))


def test_caller_zeroed_buffers_arrive_zeroed(built):
    jac, reference = built["cython"]["sparse"], built["numpy"]["sparse"]
    assert any(jac.signature.caller_zeroes["jacobian"])
    assert not all(jac.signature.caller_zeroes["jacobian"])
    K = RNG.normal(size=3)
    for n in (None,) + SIZES:
        X = RNG.normal(size=(8,) if n is None else (n, 8))
        expected = reference(X, K)
        for _ in range(3):  # leave garbage where the next results are likely to be allocated
            garbage = [np.full(array.shape, np.nan) for array in _flat(expected)]
            del garbage
            got = jac(X, K)
            _same(got, expected)
            assert not any(np.isnan(array).any() for array in _flat(got))
            _same(jac.function_and_jacobian(X, K), reference.function_and_jacobian(X, K))


def test_out_goes_through_the_general_path(built):
    jac, reference = built["cython"]["jacobian"], built["numpy"]["jacobian"]
    X, K = RNG.normal(size=(7, 3)), RNG.normal(size=3)
    out = np.full((7, 3, 3), np.nan)
    assert jac(X, K, out=out) is out
    _same(out, reference(X, K))
    f, J = np.empty((7, 3)), np.empty((7, 3, 3))
    result = jac.function_and_jacobian(X, K, out=(f, J))
    assert result[0] is f and result[1] is J
    _same(result, reference.function_and_jacobian(X, K))
    pair = built["cython"]["pair"]
    outs = ((np.empty((7, 3, 3)), np.empty((7, 3, 2))), (np.empty((7, 3)), np.empty((7, 2))))
    assert pair(X, K[:2], out=outs) is outs
    _same(outs, built["numpy"]["pair"](X, K[:2]))
    with pytest.raises(ValueError, match="out= must have shape"):
        jac(X, K, out=np.empty((3, 3)))


@pytest.mark.parametrize("num_threads", [1, 2, 3, np.int64(2)])
def test_num_threads(built, num_threads):
    jac, reference = built["cython"]["jacobian"], built["numpy"]["jacobian"]
    for n in (1, 7, 2 * jac.signature.parallel_min_points + 3):
        X, K = RNG.normal(size=(n, 3)), RNG.normal(size=3)
        _same(jac(X, K, num_threads=num_threads), reference(X, K))
        _same(jac.function_and_jacobian(X, K, num_threads=num_threads), reference.function_and_jacobian(X, K))


def test_thread_count_of_a_large_batch_comes_from_the_environment(built, monkeypatch):
    jac, reference = built["cython"]["jacobian"], built["numpy"]["jacobian"]
    large = RNG.normal(size=(max(jac.signature.parallel_min_points, 2), 3))
    small = large[:1]
    K = RNG.normal(size=3)
    monkeypatch.setenv("SYMJAC_NUM_THREADS", "2")
    _same(jac(large, K), reference(large, K))
    monkeypatch.setenv("SYMJAC_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="SYMJAC_NUM_THREADS must be a positive integer"):
        jac(large, K)
    with pytest.raises(ValueError, match="SYMJAC_NUM_THREADS must be a positive integer"):
        reference(large, K)
    _same(jac(small, K), reference(small, K))  # one thread: the environment is not read


def _error(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the type and message are what is compared
        return type(error), str(error)
    raise AssertionError("no error")


@pytest.mark.parametrize("args, kwargs", [
    ((np.zeros(4), np.zeros(3)), {}),
    ((np.zeros((5, 4)), np.zeros(3)), {}),
    ((np.zeros((5, 3)), np.zeros(2)), {}),
    ((np.zeros((5, 3)), np.zeros((4, 3))), {}),
    ((np.zeros((2, 5, 3)), np.zeros((3, 3))), {}),
    ((np.zeros(3),), {}),
    ((np.zeros(3), np.zeros(3), np.zeros(3)), {}),
    ((np.zeros(3, dtype=complex), np.zeros(3)), {}),
    ((np.array(["a", "b", "c"]), np.zeros(3)), {}),
    ((np.zeros(()), np.zeros(3)), {}),
    ((np.zeros((5, 3)), np.zeros(3)), {"num_threads": 0}),
    ((np.zeros((5, 3)), np.zeros(3)), {"num_threads": -2}),
    ((np.zeros(3), np.zeros(3)), {"num_threads": True}),
    ((np.zeros(3), np.zeros(3)), {"num_threads": 2.0}),
    ((np.zeros(3), np.zeros(3)), {"num_threads": "2"}),
    ((np.zeros((5, 3)), np.zeros(3)), {"out": np.zeros((5, 3, 2))}),
    ((np.zeros((5, 3)), np.zeros(3)), {"out": np.zeros((5, 3, 3), dtype=np.float32)}),
    ((np.zeros((5, 3)), np.zeros(3)), {"out": [np.zeros((5, 3, 3))]}),
])
def test_wrong_calls_raise_what_the_numpy_backend_raises(built, args, kwargs):
    cython, numpy_ = built["cython"]["jacobian"], built["numpy"]["jacobian"]
    for method in ("__call__", "values", "function", "function_and_jacobian"):
        expected = _error(lambda: getattr(numpy_, method)(*args, **kwargs))
        assert _error(lambda: getattr(cython, method)(*args, **kwargs)) == expected


def test_a_kernel_that_was_not_built_raises_attribute_error():
    jac = symjac.jacobian(model, x=3, k=3)
    with pytest.raises(AttributeError, match="built without the 'function' kernel"):
        jac.function(np.zeros(3), np.zeros(3))


def test_results_never_share_memory_with_the_arguments_or_each_other(built):
    jac = built["cython"]["sparse"]
    X, K = RNG.normal(size=(7, 8)), RNG.normal(size=3)
    results = _flat(jac.function_and_jacobian(X, K)) + _flat(jac(X, K))
    for number, array in enumerate(results):
        assert array.base is None
        assert not any(np.shares_memory(array, other) for other in [X, K] + results[:number])


def test_entries_refuse_a_signature_of_another_model(built):
    jac, other = built["cython"]["jacobian"], built["cython"]["sparse"]
    with pytest.raises(ValueError, match="do not match"):
        jac._module.MODEL.make_entry("jacobian", print, other.signature, None)
    with pytest.raises(KeyError):
        jac._module.MODEL.make_entry("hessian", print, jac.signature, None)
