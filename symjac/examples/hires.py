"""The HIRES problem: "High Irradiance RESponse" of photomorphogenesis.

A stiff chemical kinetics system of 8 species, modelling the response of a
plant to high-irradiance light through phytochrome (Schäfer 1975), as given
by Hairer & Wanner, *Solving ODEs II*, sec. IV.10 (the "HIRES" test problem):

    y1' = -k1 y1 + k2 y2 + k3 y3 + k4
    y2' =  k1 y1 - k5 y2
    y3' = -k6 y3 + k2 y4 + k7 y5
    y4' =  k3 y2 + k1 y3 - k8 y4
    y5' = -k9 y5 + k2 y6 + k2 y7
    y6' = -k10 y6 y8 + k11 y4 + k1 y5 - k2 y6 + k11 y7
    y7' =  k10 y6 y8 - k12 y7
    y8' = -k10 y6 y8 + k12 y7

with the rate constants ``K_DEFAULT`` = (k1, ..., k12) =
(1.71, 0.43, 8.32, 0.0007, 8.75, 10.03, 0.035, 1.12, 1.745, 280, 0.69, 1.81),
the initial value ``Y0`` = (1, 0, 0, 0, 0, 0, 0, 0.0057) and the time span
[0, 321.8122].  The only non-linearity is the bimolecular reaction
k10 y6 y8; the stiffness comes from the spread of the rate constants.

Shapes: ``y`` (8,), ``k`` (12,) -> ``f`` (8,); Jacobian d f / d y is (8, 8)
with 25 structural non-zeros.
"""

from __future__ import annotations

import numpy as np

SHAPES = {"y": 8, "k": 12}
WRT = "y"
K_DEFAULT = np.array([1.71, 0.43, 8.32, 0.0007, 8.75, 10.03,
                      0.035, 1.12, 1.745, 280.0, 0.69, 1.81])
Y0 = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057])
T_END = 321.8122


def hires(y, k):
    """Right-hand side of the HIRES system: y (8,), k (12,) -> (8,)."""
    k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12 = (k[i] for i in range(12))
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[i] for i in range(8))
    return np.array([-k1*y1 + k2*y2 + k3*y3 + k4,
                      k1*y1 - k5*y2,
                     -k6*y3 + k2*y4 + k7*y5,
                      k3*y2 + k1*y3 - k8*y4,
                     -k9*y5 + k2*y6 + k2*y7,
                     -k10*y6*y8 + k11*y4 + k1*y5 - k2*y6 + k11*y7,
                      k10*y6*y8 - k12*y7,
                     -k10*y6*y8 + k12*y7])


def jacobian_hires(y, k):
    """Hand-derived d hires / d y at one point: (8, 8)."""
    k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12 = (k[i] for i in range(12))
    y6, y8 = y[5], y[7]
    J = np.zeros((8, 8), dtype=np.result_type(y, k, float))
    J[0, 0], J[0, 1], J[0, 2] = -k1, k2, k3
    J[1, 0], J[1, 1] = k1, -k5
    J[2, 2], J[2, 3], J[2, 4] = -k6, k2, k7
    J[3, 1], J[3, 2], J[3, 3] = k3, k1, -k8
    J[4, 4], J[4, 5], J[4, 6] = -k9, k2, k2
    J[5, 3], J[5, 4], J[5, 5], J[5, 6], J[5, 7] = k11, k1, -k10*y8 - k2, k11, -k10*y6
    J[6, 5], J[6, 6], J[6, 7] = k10*y8, -k12, k10*y6
    J[7, 5], J[7, 6], J[7, 7] = -k10*y8, k12, -k10*y6
    return J


def main(argv=None):
    from symjac.examples import _run_demo

    rng = np.random.default_rng(0)
    y0 = np.array([0.7, 0.15, 0.05, 0.1, 0.02, 0.3, 0.01, 0.005])
    Y = y0 * rng.uniform(0.5, 1.5, size=(5, 8))
    return _run_demo(hires, jacobian_hires, SHAPES, WRT,
                     point=(y0, K_DEFAULT), batch=(Y, K_DEFAULT), argv=argv)


if __name__ == "__main__":
    main()
