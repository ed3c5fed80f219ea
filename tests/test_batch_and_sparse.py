"""Threads, the single-point fast path, packed values and sparse results."""

import threading
import tracemalloc

import numpy as np
import pytest
import scipy.sparse  # scipy is in the test extra: these tests must run, never skip
from scipy import integrate, optimize

import symjac
from symjac.examples.brusselator import P_DEFAULT, initial_value, jacobian_brusselator, make_brusselator
from symjac.examples.lorenz import P_DEFAULT as LORENZ_P
from symjac.examples.lorenz import jacobian_lorenz, lorenz



@pytest.fixture(scope="module")
def lorenz_cython():
    return symjac.jacobian(lorenz, u=3, p=3, backend="cython", kernels=("jacobian", "function", "function_and_jacobian"))


@pytest.fixture(scope="module")
def brusselator_jacobians():
    n = 40
    f = make_brusselator(n)
    return n, f, {b: symjac.jacobian(f, u=2 * n, p=3, backend=b) for b in ("numpy", "cython")}


def test_threaded_batch_equals_single_thread(lorenz_cython, monkeypatch):
    rng = np.random.default_rng(0)
    U = rng.normal(size=(50_000, 3))
    assert U.shape[0] >= lorenz_cython.signature.parallel_min_points
    single = lorenz_cython(U, LORENZ_P, num_threads=1)
    for threads in (2, 3, 8):
        np.testing.assert_array_equal(lorenz_cython(U, LORENZ_P, num_threads=threads), single)
    monkeypatch.setenv("SYMJAC_NUM_THREADS", "2")
    np.testing.assert_array_equal(lorenz_cython(U, LORENZ_P), single)
    np.testing.assert_array_equal(single[123], jacobian_lorenz(U[123], LORENZ_P))
    with pytest.raises(ValueError, match="num_threads"):
        lorenz_cython(U, LORENZ_P, num_threads="many")


def test_fast_single_point_path_agrees_with_general_path(lorenz_cython):
    u = np.array([0.5, -1.0, 2.0])
    fast = lorenz_cython(u, LORENZ_P)
    assert type(lorenz_cython).__call__ is not symjac.Jacobian.__call__  # the compiled entry
    general = lorenz_cython(u[None, :], LORENZ_P)[0]  # a batch of one takes the general path
    np.testing.assert_array_equal(fast, general)
    np.testing.assert_array_equal(fast, jacobian_lorenz(u, LORENZ_P))
    # Arguments the fast path does not take fall back, with the same result.
    for args in [(list(u), LORENZ_P), (u.astype(np.float32).astype(np.float64), list(LORENZ_P)),
                 (np.array([u, u]).T[:, 0], LORENZ_P), (u.astype(">f8"), LORENZ_P)]:
        np.testing.assert_array_equal(lorenz_cython(*args), fast)
    assert lorenz_cython(u, LORENZ_P) is not lorenz_cython(u, LORENZ_P)  # a new array each call


def test_threads_called_concurrently_get_single_thread_results(lorenz_cython):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(8, 200, 3))
    expected = [lorenz_cython(p, LORENZ_P) for p in points]
    results = [None] * 8

    def work(k):
        for _ in range(50):
            results[k] = lorenz_cython(points[k], LORENZ_P)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_values_sparse_and_dense_agree(brusselator_jacobians, backend):
    n, f, jacobians = brusselator_jacobians
    jac = jacobians[backend]
    u = initial_value(n) + 0.01 * np.arange(2 * n)
    dense = jac(u, P_DEFAULT)
    np.testing.assert_allclose(dense, jacobian_brusselator(u, P_DEFAULT), rtol=1e-13, atol=1e-13)
    assert jac.signature.caller_zeroes["jacobian"] == (True,)  # 5 % dense: the caller zeroes
    stale = np.full(dense.shape, np.nan)
    np.testing.assert_array_equal(jac(u, P_DEFAULT, out=stale), dense)  # out= is cleared first
    np.testing.assert_array_equal(jac(np.stack([u, u]), P_DEFAULT)[1], dense)
    rows, cols = jac.indices()
    values = jac.values(u, P_DEFAULT)
    assert values.shape == (jac.nonzeros,) and jac.nonzeros == 8 * n - 4
    np.testing.assert_array_equal(dense[rows, cols], values)
    assert np.count_nonzero(dense) <= jac.nonzeros
    for fmt in ("csr", "csc", "coo"):
        matrix = jac.sparse(u, P_DEFAULT, format=fmt)
        assert isinstance(matrix, scipy.sparse.sparray)
        assert matrix.format == fmt and matrix.shape == (2 * n, 2 * n)
        np.testing.assert_array_equal(matrix.toarray(), dense)
    pattern = jac.sparsity_matrix()
    np.testing.assert_array_equal(pattern.toarray() != 0, jac.sparsity)
    assert not jac.sparsity.flags.writeable
    batch = np.stack([u, 2 * u, 3 * u])
    np.testing.assert_array_equal(jac.values(batch, P_DEFAULT)[2], jac.values(3 * u, P_DEFAULT))
    with pytest.raises(ValueError, match="one point"):
        jac.sparse(batch, P_DEFAULT)


def _peak_bytes(call):
    call()  # warm up caches and lazy imports
    tracemalloc.start()
    call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_sparse_evaluation_allocates_no_dense_matrix(brusselator_jacobians):
    n, f, jacobians = brusselator_jacobians
    jac = jacobians["cython"]
    u = initial_value(n)
    dense_bytes = (2 * n) ** 2 * 8
    assert _peak_bytes(lambda: jac.values(u, P_DEFAULT)) < dense_bytes / 4
    assert _peak_bytes(lambda: jac.sparse(u, P_DEFAULT)) < dense_bytes / 2


def test_solve_ivp_bdf_with_sparse_symjac_jacobian(brusselator_jacobians):
    n, f, jacobians = brusselator_jacobians
    jac = jacobians["cython"]
    rhs = lambda t, u: f(u, P_DEFAULT)  # noqa: E731
    u0 = initial_value(n)
    calls = []

    def sparse_jacobian(t, u):
        calls.append(t)
        return jac.sparse(u, P_DEFAULT, format="csc")

    exact = integrate.solve_ivp(rhs, (0, 2), u0, method="BDF", rtol=1e-8, atol=1e-10, jac=sparse_jacobian)
    by_pattern = integrate.solve_ivp(rhs, (0, 2), u0, method="BDF", rtol=1e-8, atol=1e-10,
                                     jac_sparsity=jac.sparsity_matrix())
    assert exact.success and by_pattern.success
    np.testing.assert_allclose(exact.y[:, -1], by_pattern.y[:, -1], rtol=1e-5)
    assert exact.njev == len(calls) > 0


def test_least_squares_with_symjac_jacobian():
    t = np.linspace(0, 3, 20)
    data = 2.5 * np.exp(-1.3 * t) + 0.5

    def residual(c, t):
        return c[0] * np.exp(-c[1] * t) + c[2] - data

    jac = symjac.jacobian(residual, c=3, t=20, backend="cython")
    fit = optimize.least_squares(residual, [1.0, 1.0, 0.0], jac=jac, args=(t,))
    np.testing.assert_allclose(fit.x, [2.5, 1.3, 0.5], rtol=1e-8)


def test_native_flag_builds_and_agrees():
    jac = symjac.jacobian(lorenz, u=3, p=3, backend="cython", native=True)
    u = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(jac(u, LORENZ_P), jacobian_lorenz(u, LORENZ_P), rtol=1e-15)


def test_function_and_jacobian_share_one_kernel(lorenz_cython):
    U = np.random.default_rng(2).normal(size=(5, 3))
    value, J = lorenz_cython.function_and_jacobian(U, LORENZ_P)
    np.testing.assert_array_equal(J, lorenz_cython(U, LORENZ_P))
    np.testing.assert_allclose(value, [lorenz(u, LORENZ_P) for u in U], rtol=1e-15)
