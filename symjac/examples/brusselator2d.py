"""The 2-D Brusselator reaction-diffusion system on a periodic m-by-m grid.

The PDE (Hairer & Wanner, *Solving ODEs II*, sec. IV.10, eq. (10.15), with a
constant source instead of their pulse f(x, y, t))

    u_t = A + u^2 v - (B + 1) u + alpha (u_xx + u_yy)
    v_t = B u - u^2 v           + alpha (v_xx + v_yy),   (x, y) in [0, 1)^2,

with periodic boundary conditions, on the grid x_i = i / m, y_j = j / m
(i, j = 0..m-1) with the 5-point Laplacian, becomes

    u_ij' = A + u_ij^2 v_ij - (B+1) u_ij
            + alpha m^2 (u_{i-1,j} + u_{i+1,j} + u_{i,j-1} + u_{i,j+1} - 4 u_ij)
    v_ij' = B u_ij - u_ij^2 v_ij
            + alpha m^2 (v_{i-1,j} + v_{i+1,j} + v_{i,j-1} + v_{i,j+1} - 4 v_ij)

with indices taken modulo m. Default parameters ``P_DEFAULT`` are A = 3.4,
B = 1, alpha = 0.1 (Hairer & Wanner's 2-D values); ``m`` is a free option.

Shapes: ``make_brusselator_2d(m)`` returns ``f(u, p)`` with the state
``u`` (2 m^2,) = (u flattened row-major, then v flattened) and
``p = (A, B, alpha)`` (3,) -> ``f`` (2 m^2,). The Jacobian d f / d u has
2 m^2 rows with 6 non-zeros each (m >= 3): the diagonal (reaction and
Laplacian centre), the four Laplacian neighbours and the u-v reaction
coupling, i.e. 12 m^2 non-zeros (fewer for m <= 2, where neighbours coincide).
m = 64 gives 8,192 states.
The code is vectorised with ``np.roll`` (no Python loop over grid points) so
symjac can trace it and numpy runs it on float or complex arrays.
"""

from __future__ import annotations

import numpy as np

M_DEFAULT = 8
SHAPES = {"u": 2 * M_DEFAULT * M_DEFAULT, "p": 3}
WRT = "u"
P_DEFAULT = np.array([3.4, 1.0, 0.1])


def _laplacian(w):
    """Periodic 5-point stencil on the 2-D array ``w`` (without the 1/h^2 factor)."""
    return (np.roll(w, 1, axis=0) + np.roll(w, -1, axis=0)
            + np.roll(w, 1, axis=1) + np.roll(w, -1, axis=1) - 4 * w)


def make_brusselator_2d(m):
    """The 2-D Brusselator right-hand side ``f(u, p)`` on an ``m`` x ``m`` periodic grid."""
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"make_brusselator_2d needs a positive int grid size, got {m!r}")
    m = int(m)
    cells = m * m

    def brusselator_2d(u, p):
        A, B, alpha = p[0], p[1], p[2]
        c = alpha * m**2
        uu = u[:cells].reshape(m, m)
        vv = u[cells:].reshape(m, m)
        reaction = uu**2 * vv
        du = A + reaction - (B + 1) * uu + c * _laplacian(uu)
        dv = B * uu - reaction + c * _laplacian(vv)
        return np.concatenate((du.reshape(cells), dv.reshape(cells)))

    brusselator_2d.__doc__ = (f"2-D Brusselator right-hand side on a {m}x{m} periodic grid: "
                              f"u ({2 * cells},), p (3,) -> ({2 * cells},).")
    return brusselator_2d


brusselator_2d = make_brusselator_2d(M_DEFAULT)


def initial_value(m=M_DEFAULT):
    """Hairer & Wanner's initial state u = 22 y (1 - y)^1.5, v = 27 x (1 - x)^1.5: (2 m^2,)."""
    x = np.arange(m) / m
    X, Y = np.meshgrid(x, x, indexing="ij")
    u0 = 22.0 * Y * (1.0 - Y) ** 1.5
    v0 = 27.0 * X * (1.0 - X) ** 1.5
    return np.concatenate((u0.ravel(), v0.ravel()))


def nonzeros(m):
    """Structural non-zeros of d f / d u: 12 m^2 for m >= 3 (None below)."""
    return 12 * m * m if m >= 3 else None
