"""The Van der Pol oscillator as a first-order system.

    y1' = y2
    y2' = mu (1 - y1^2) y2 - y1

Stiff for large ``mu`` (Hairer & Wanner, *Solving ODEs II*, sec. IV.1 use
``mu = 1e3`` and more). Shapes: ``y`` (2,), ``mu`` () (a scalar) -> ``f`` (2,);
Jacobian d f / d y is (2, 2).
"""

from __future__ import annotations

import numpy as np

SHAPES = {"y": 2, "mu": ()}
WRT = "y"
MU_DEFAULT = np.float64(1000.0)


def vanderpol(y, mu):
    """Right-hand side of the Van der Pol system."""
    return np.array([y[1],
                     mu * (1 - y[0]**2) * y[1] - y[0]])


def jacobian_vanderpol(y, mu):
    """Hand-derived d vanderpol / d y at one point: (2, 2)."""
    return np.array([[0.0, 1.0],
                     [-2 * mu * y[0] * y[1] - 1, mu * (1 - y[0]**2)]])


def main(argv=None):
    from symjac.examples import _run_demo

    rng = np.random.default_rng(0)
    y0 = np.array([2.0, 0.0])
    Y = rng.normal(0.0, 2.0, size=(5, 2))
    return _run_demo(vanderpol, jacobian_vanderpol, SHAPES, WRT,
                     point=(y0, MU_DEFAULT), batch=(Y, MU_DEFAULT), argv=argv)


if __name__ == "__main__":
    main()
