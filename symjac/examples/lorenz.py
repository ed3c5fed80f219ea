"""The Lorenz-63 system (Lorenz, "Deterministic nonperiodic flow", 1963).

    x' = sigma (y - x)
    y' = x (rho - z) - y
    z' = x y - beta z

Shapes: ``u = (x, y, z)`` (3,), ``p = (sigma, rho, beta)`` (3,) -> ``f`` (3,);
Jacobian d f / d u is (3, 3). ``P_DEFAULT`` holds the chaotic parameter set
``(10, 28, 8/3)``.
"""

from __future__ import annotations

import numpy as np

SHAPES = {"u": 3, "p": 3}
WRT = "u"
P_DEFAULT = np.array([10.0, 28.0, 8.0 / 3.0])


def lorenz(u, p):
    """Right-hand side of the Lorenz system."""
    sigma, rho, beta = p[0], p[1], p[2]
    x, y, z = u[0], u[1], u[2]
    return np.array([sigma * (y - x),
                     x * (rho - z) - y,
                     x * y - beta * z])


def jacobian_lorenz(u, p):
    """Hand-derived d lorenz / d u at one point: (3, 3)."""
    sigma, rho, beta = p[0], p[1], p[2]
    x, y, z = u[0], u[1], u[2]
    return np.array([[-sigma, sigma, 0.0],
                     [rho - z, -1.0, -x],
                     [y, x, -beta]])


def main(argv=None):
    from symjac.examples import _run_demo

    rng = np.random.default_rng(0)
    u0 = np.array([1.0, 1.0, 1.0])
    U = rng.normal(0.0, 10.0, size=(5, 3))
    return _run_demo(lorenz, jacobian_lorenz, SHAPES, WRT,
                     point=(u0, P_DEFAULT), batch=(U, P_DEFAULT), argv=argv)


if __name__ == "__main__":
    main()
