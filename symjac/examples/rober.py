"""Robertson's stiff chemical kinetics problem (ROBER).

Three species with concentrations ``y = (y1, y2, y3)`` and reactions

    A -> B          (rate k1)
    B + B -> C + B  (rate k2)
    B + C -> A + C  (rate k3)

give the ODE (Hairer & Wanner, *Solving ODEs II*, sec. IV.1)

    y1' = -k1 y1 + k3 y2 y3
    y2' =  k1 y1 - k2 y2^2 - k3 y2 y3
    y3' =  k2 y2^2

Shapes: ``y`` (3,), ``k`` (3,) -> ``f`` (3,); Jacobian d f / d y is (3, 3).
The classic rate constants are ``K_DEFAULT = (0.04, 3e7, 1e4)``.
"""

from __future__ import annotations

import numpy as np

SHAPES = {"y": 3, "k": 3}
WRT = "y"
K_DEFAULT = np.array([0.04, 3e7, 1e4])
Y0 = np.array([1.0, 0.0, 0.0])  # the classic initial value


def rober(y, k):
    """Right-hand side of the Robertson ODE, exactly as in DESIGN.md."""
    return np.array([-k[0]*y[0] + k[2]*y[1]*y[2],
                      k[0]*y[0] - k[1]*y[1]**2 - k[2]*y[1]*y[2],
                      k[1]*y[1]**2])


def jacobian_rober(y, k):
    """Hand-derived d rober / d y at one point: (3, 3)."""
    return np.array([[-k[0], k[2]*y[2], k[2]*y[1]],
                     [k[0], -2*k[1]*y[1] - k[2]*y[2], -k[2]*y[1]],
                     [0.0, 2*k[1]*y[1], 0.0]])


def main(argv=None):
    from symjac.examples import _run_demo

    rng = np.random.default_rng(0)
    y0 = np.array([0.9, 2e-5, 0.1])
    Y = y0 * rng.uniform(0.5, 1.5, size=(5, 3))
    return _run_demo(rober, jacobian_rober, SHAPES, WRT,
                     point=(y0, K_DEFAULT), batch=(Y, K_DEFAULT), argv=argv)


if __name__ == "__main__":
    main()
