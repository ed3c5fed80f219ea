"""The example models: their hand Jacobians, and symjac against them.

Three independent evaluators meet here:
- the model itself, differentiated by complex step (imag(f(x + i h e_j)) / h,
  h = 1e-20, exact to rounding: no subtraction), validates the hand Jacobians;
- the hand Jacobians (``jacobian_<name>`` in each example module) are then the
  oracle for ``symjac.jacobian`` on both backends, at one point and in batches.

Compiles are slow, so each symjac Jacobian is built at most once per backend
(module-scoped fixture, built lazily on first use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import symjac
from oracles import complex_step_jacobian
from symjac.examples import _hand_batched, brusselator, lorenz, mlp, rober, vanderpol

BACKENDS = ("numpy", "cython")
N_BATCH = 7


@dataclass(frozen=True)
class Case:
    """One example model: how to build its Jacobian and where to evaluate it."""

    func: Callable
    hand: Callable          # hand Jacobian w.r.t. the first argument, one point
    shapes: dict            # argument name -> shape, in argument order
    wrt: str
    sample: Callable        # rng -> tuple of positional arguments at one point


def _sample_rober(rng):
    y = np.array([rng.uniform(0.1, 1.0), rng.uniform(1e-6, 1e-4), rng.uniform(0.1, 1.0)])
    return y, rober.K_DEFAULT * rng.uniform(0.5, 1.5, 3)


def _sample_lorenz(rng):
    return rng.normal(0.0, 10.0, 3), lorenz.P_DEFAULT * rng.uniform(0.5, 1.5, 3)


def _sample_vanderpol(rng):
    return rng.normal(0.0, 2.0, 2), np.array(rng.uniform(0.1, 1000.0))


def _sample_brusselator(rng):
    u = brusselator.initial_value(brusselator.N_DEFAULT)
    return u + rng.normal(0.0, 0.1, u.shape), brusselator.P_DEFAULT * rng.uniform(0.5, 1.5, 3)


def _sample_mlp(rng):
    return (rng.normal(size=mlp.N_IN), *mlp.random_weights(seed=int(rng.integers(2**31))))


MLP_CONST = mlp.make_mlp_with_constant_weights(seed=7)

CASES = {
    "rober": Case(rober.rober, rober.jacobian_rober, rober.SHAPES, rober.WRT, _sample_rober),
    "lorenz": Case(lorenz.lorenz, lorenz.jacobian_lorenz, lorenz.SHAPES, lorenz.WRT,
                   _sample_lorenz),
    "vanderpol": Case(vanderpol.vanderpol, vanderpol.jacobian_vanderpol, vanderpol.SHAPES,
                      vanderpol.WRT, _sample_vanderpol),
    "brusselator": Case(brusselator.brusselator, brusselator.jacobian_brusselator,
                        brusselator.SHAPES, brusselator.WRT, _sample_brusselator),
    "mlp": Case(mlp.mlp, mlp.jacobian_mlp, mlp.SHAPES, mlp.WRT, _sample_mlp),
    "mlp_const": Case(MLP_CONST, lambda x: mlp.jacobian_mlp(x, *MLP_CONST.weights),
                      {"x": mlp.N_IN}, "x", lambda rng: (rng.normal(size=mlp.N_IN),)),
}
NAMES = sorted(CASES)


def _seed(name):
    """A fixed seed per model, so failures reproduce and models differ."""
    return sum(map(ord, name))


def _assert_jacobian_close(got, expected):
    """rtol 1e-12; an atol far below the largest entry absorbs cancellation near 0."""
    assert got.shape == expected.shape
    assert got.dtype == np.float64
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14 * scale)


@pytest.fixture(scope="module", params=BACKENDS)
def build(request):
    """build(name) -> symjac Jacobian of CASES[name] on this backend, made once."""
    backend = request.param
    made = {}

    def get(name):
        if name not in made:
            case = CASES[name]
            made[name] = symjac.jacobian(case.func, **case.shapes, wrt=case.wrt,
                                         backend=backend)
        return made[name]

    get.backend = backend
    return get


# --- (a) the oracle: hand Jacobians against complex step of the model --------


@pytest.mark.parametrize("name", NAMES)
def test_model_runs_on_float_and_complex(name):
    case = CASES[name]
    args = case.sample(np.random.default_rng(_seed(name)))
    out = case.func(*args)
    assert out.dtype == np.float64
    out_c = case.func(np.asarray(args[0], dtype=complex), *args[1:])
    assert out_c.dtype == np.complex128
    np.testing.assert_allclose(out_c.real, out, rtol=1e-14)  # complex BLAS may round differently
    assert case.hand(*args).shape == out.shape + np.shape(args[0])


@pytest.mark.parametrize("name", NAMES)
def test_hand_jacobian_matches_complex_step(name):
    case = CASES[name]
    rng = np.random.default_rng(_seed(name))
    for _ in range(3):
        args = case.sample(rng)
        expected = complex_step_jacobian(case.func, args, 0)
        np.testing.assert_allclose(case.hand(*args), expected, rtol=1e-13,
                                   atol=1e-15 * np.max(np.abs(expected)))


def test_brusselator_n_is_general():
    """The hand Jacobian infers n; check a size other than the default too."""
    f = brusselator.make_brusselator(3)
    args = (brusselator.initial_value(3), brusselator.P_DEFAULT)
    np.testing.assert_allclose(brusselator.jacobian_brusselator(*args),
                               complex_step_jacobian(f, args, 0), rtol=1e-13)


def test_mlp_constant_weights_is_mlp():
    x = np.random.default_rng(0).normal(size=mlp.N_IN)
    np.testing.assert_array_equal(MLP_CONST(x), mlp.mlp(x, *MLP_CONST.weights))
    np.testing.assert_array_equal(MLP_CONST.weights[0], mlp.random_weights(seed=7)[0])


# --- (b) symjac against the hand Jacobians, both backends --------------------


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_at_a_point(build, name):
    case = CASES[name]
    jac = build(name)
    assert jac.backend == build.backend
    args = case.sample(np.random.default_rng(_seed(name)))
    _assert_jacobian_close(jac(*args), case.hand(*args))


@pytest.mark.parametrize("batched", ["wrt_only", "all_args"])
@pytest.mark.parametrize("name", NAMES)
def test_jacobian_on_a_batch(build, name, batched):
    case = CASES[name]
    jac = build(name)
    rng = np.random.default_rng(_seed(name) + 1)
    points = [case.sample(rng) for _ in range(N_BATCH)]
    stacked = [np.stack(column) for column in zip(*points)]
    args = [stacked[0], *points[0][1:]] if batched == "wrt_only" else stacked
    Jb = jac(*args)
    expected = _hand_batched(case.hand, case.shapes.values(), args)
    assert expected.shape[0] == N_BATCH
    _assert_jacobian_close(Jb, expected)


@pytest.mark.parametrize("name", NAMES)
def test_sparsity_is_hand_nonzero_pattern(build, name):
    """At a generic point every structural non-zero of these models is non-zero."""
    case = CASES[name]
    args = case.sample(np.random.default_rng(_seed(name)))
    sparsity = build(name).sparsity
    assert sparsity.dtype == np.bool_
    np.testing.assert_array_equal(sparsity, case.hand(*args) != 0)


# --- (c) MLP: weights as parameters vs weights as constants ------------------


def test_mlp_parameters_vs_constants(build):
    jac_params, jac_const = build("mlp"), build("mlp_const")
    X = np.random.default_rng(3).normal(size=(N_BATCH, mlp.N_IN))
    J_params = jac_params(X, *MLP_CONST.weights)
    J_const = jac_const(X)
    assert J_const.shape == (N_BATCH, mlp.N_OUT, mlp.N_IN)
    np.testing.assert_allclose(J_params, J_const, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jac_params(X[0], *MLP_CONST.weights), jac_const(X[0]),
                               rtol=1e-12, atol=1e-15)


# --- (d) Brusselator sparsity: tridiagonal blocks ------------------------------


def test_brusselator_sparsity_is_tridiagonal_blocks(build):
    n = brusselator.N_DEFAULT
    tridiagonal = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1
    diagonal = np.eye(n, dtype=bool)
    expected = np.block([[tridiagonal, diagonal], [diagonal, tridiagonal]])
    np.testing.assert_array_equal(build("brusselator").sparsity, expected)


# --- the demos (numpy backend: nothing to compile) -----------------------------


@pytest.mark.parametrize("module", [rober, lorenz, vanderpol, brusselator, mlp],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_demo_runs(module, capsys):
    jac = module.main(["--backend", "numpy"])
    assert jac.backend == "numpy"
    out = capsys.readouterr().out
    assert out.count("max |symjac - hand|") == 2
    assert "shape (5," in out
