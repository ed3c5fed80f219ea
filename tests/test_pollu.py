"""The POLLU example: its hand Jacobian against complex step, then symjac against it.

Two independent evaluators first: ``jacobian_pollu`` (written out entry by
entry) and complex step of the right-hand side ``pollu`` (plain numpy, no
symjac), plus central differences as a second, cruder check. Then
``symjac.jacobian`` (numpy backend: no compiler, fast) against the hand
Jacobian at one point and on a batch, and its structural non-zero count.
"""

from __future__ import annotations

import numpy as np
import pytest

import symjac
from oracles import central_difference_jacobian, complex_step_jacobian
from symjac.examples import _hand_batched
from symjac.examples.pollu import K_DEFAULT, NONZEROS, SHAPES, WRT, Y0, jacobian_pollu, pollu, sample_states

SEED = 20260130


def _points(n):
    return sample_states(np.random.default_rng(SEED), n)


def test_right_hand_side_at_the_initial_value():
    # At Y0 only species 2, 4, 7, 8, 9, 17 are present; spot-check a few terms by hand.
    f = pollu(Y0, K_DEFAULT)
    k = K_DEFAULT
    assert f.shape == (20,)
    assert f[0] == pytest.approx(k[1] * 0.2 * 0.04)                          # r2 only
    assert f[4] == pytest.approx(2 * k[3] * 0.1 + k[6] * 0.01)                # 2 r4 + r7
    assert f[7] == pytest.approx((k[3] + k[4]) * 0.1 + k[6] * 0.01)           # r4 + r5 + r7
    assert f[11] == 0.0 and f[16] == 0.0                                      # r9 = r20 = 0 (y11 = y6 = 0)


@pytest.mark.parametrize("index", range(4))
def test_hand_jacobian_matches_complex_step(index):
    y = _points(4)[index]
    k = K_DEFAULT * np.random.default_rng([SEED, index]).uniform(0.5, 1.5, 25)
    J_hand = jacobian_pollu(y, k)
    J_cs = complex_step_jacobian(pollu, (y, k), 0)
    np.testing.assert_allclose(J_hand, J_cs, rtol=1e-13, atol=1e-13 * np.max(np.abs(J_cs)))


def test_hand_jacobian_matches_central_differences():
    y = _points(1)[0]
    J_hand = jacobian_pollu(y, K_DEFAULT)
    J_cd = central_difference_jacobian(pollu, (y, K_DEFAULT), 0, h=1e-7)
    np.testing.assert_allclose(J_hand, J_cd, rtol=1e-6, atol=1e-6 * np.max(np.abs(J_cd)))


def test_hand_jacobian_sparsity():
    # Structural pattern: an entry is non-zero at a generic point and zero everywhere else.
    pattern = np.zeros((20, 20), dtype=bool)
    for y in _points(3):
        pattern |= jacobian_pollu(y, K_DEFAULT) != 0
    assert pattern.sum() == NONZEROS == 82
    assert not pattern[:, [7, 11, 14, 17]].any()  # y8, y12, y15, y18 never react


@pytest.fixture(scope="module")
def jac():
    return symjac.jacobian(pollu, **SHAPES, wrt=WRT, backend="numpy")


def test_symjac_matches_hand_jacobian_at_one_point(jac):
    y = _points(1)[0]
    J_hand = jacobian_pollu(y, K_DEFAULT)
    np.testing.assert_allclose(jac(y, K_DEFAULT), J_hand, rtol=1e-14, atol=1e-14 * np.max(np.abs(J_hand)))
    assert jac.nonzeros == NONZEROS


def test_symjac_matches_hand_jacobian_on_a_batch(jac):
    Y = _points(9)
    K = K_DEFAULT * np.random.default_rng(SEED + 1).uniform(0.5, 1.5, size=(9, 25))
    J = jac(Y, K)
    J_hand = _hand_batched(jacobian_pollu, SHAPES.values(), (Y, K))
    assert J.shape == (9, 20, 20)
    np.testing.assert_allclose(J, J_hand, rtol=1e-14, atol=1e-14 * np.max(np.abs(J_hand)))
