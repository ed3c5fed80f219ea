"""Scalar objectives for the Hessian and gradient examples, with analytic gradients.

``lennard_jones(x)``: the Lennard-Jones energy of ``len(x) // 3`` atoms
(reduced units, epsilon = sigma = 1), a dense Hessian; ``rosenbrock(x)``:
the extended Rosenbrock function, a tridiagonal Hessian. Both are plain
numpy code that also runs on complex arrays, for complex-step oracles.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lattice", "lennard_jones", "lennard_jones_gradient", "rosenbrock", "rosenbrock_gradient"]


def lennard_jones(x):
    """Sum over atom pairs of 4 (r^-12 - r^-6), r the distance; x holds 3 coordinates per atom."""
    p = x.reshape(-1, 3)
    energy = 0.0
    for i in range(p.shape[0]):
        for j in range(i):
            r2 = np.sum((p[i] - p[j]) ** 2)
            energy = energy + 4.0 * (r2 ** -6 - r2 ** -3)
    return energy


def lennard_jones_gradient(x):
    """The analytic gradient of :func:`lennard_jones`."""
    p = x.reshape(-1, 3)
    g = np.zeros_like(p)
    for i in range(p.shape[0]):
        for j in range(i):
            d = p[i] - p[j]
            r2 = np.sum(d * d)
            dE_dr2 = 4.0 * (-6.0 * r2 ** -7 + 3.0 * r2 ** -4)
            g[i] = g[i] + 2.0 * dE_dr2 * d
            g[j] = g[j] - 2.0 * dE_dr2 * d
    return g.reshape(-1)


def lattice(atoms, rng, jitter=0.05):
    """Coordinates of ``atoms`` atoms on a cubic lattice of spacing 1.1, perturbed."""
    side = int(np.ceil(atoms ** (1 / 3)))
    grid = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)][:atoms]) * 1.1
    return (grid + jitter * rng.normal(size=grid.shape)).reshape(-1)


def rosenbrock(x):
    """sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2."""
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_gradient(x):
    """The analytic gradient of :func:`rosenbrock`."""
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] = g[1:] + 200.0 * (x[1:] - x[:-1] ** 2)
    return g
