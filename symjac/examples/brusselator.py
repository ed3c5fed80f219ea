"""The 1-D Brusselator reaction-diffusion system, discretised by the method of lines.

The PDE (Hairer & Wanner, *Solving ODEs II*, sec. IV.1, eq. (1.6))

    u_t = A + u^2 v - (B + 1) u + alpha u_xx
    v_t = B u - u^2 v           + alpha v_xx,      0 <= x <= 1,

with Dirichlet boundaries u(0) = u(1) = 1, v(0) = v(1) = 3, on the grid
x_i = i / (n + 1), i = 1..n, with second differences, becomes (their (1.6'))

    u_i' = A + u_i^2 v_i - (B+1) u_i + alpha (n+1)^2 (u_{i-1} - 2 u_i + u_{i+1})
    v_i' = B u_i - u_i^2 v_i         + alpha (n+1)^2 (v_{i-1} - 2 v_i + v_{i+1})

where u_0 = u_{n+1} = ``U_BOUNDARY`` = 1 and v_0 = v_{n+1} = ``V_BOUNDARY`` = 3.
Hairer & Wanner take A = 1, B = 3, alpha = 1/50 (``P_DEFAULT``); the boundary
values are then the homogeneous steady state (A, B/A).

Shapes: ``make_brusselator(n)`` returns ``f(u, p)`` with the state
``u`` (2n,) = (u_1..u_n, v_1..v_n) and ``p = (A, B, alpha)`` (3,) -> ``f`` (2n,).
The Jacobian d f / d u is (2n, 2n): four n-by-n blocks, tridiagonal on the
diagonal (diffusion), diagonal off it (reaction). ``brusselator`` is the model
for ``N_DEFAULT`` grid points. The code is vectorised (slicing and
``np.concatenate``, no loop over grid points) so symjac can trace it.
"""

from __future__ import annotations

import numpy as np

N_DEFAULT = 5
SHAPES = {"u": 2 * N_DEFAULT, "p": 3}
WRT = "u"
P_DEFAULT = np.array([1.0, 3.0, 1.0 / 50.0])
U_BOUNDARY = 1.0
V_BOUNDARY = 3.0


def _second_difference(w, boundary):
    """w_{i-1} - 2 w_i + w_{i+1} for all i, with w_0 = w_{n+1} = boundary."""
    edge = np.array([boundary])
    padded = np.concatenate((edge, w, edge))
    return padded[:-2] - 2 * padded[1:-1] + padded[2:]


def make_brusselator(n):
    """The Brusselator right-hand side ``f(u, p)`` on ``n`` interior grid points."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"make_brusselator needs a positive int number of grid points, got {n!r}")
    n = int(n)

    def brusselator(u, p):
        A, B, alpha = p[0], p[1], p[2]
        c = alpha * (n + 1) ** 2
        uu, vv = u[:n], u[n:]
        reaction = uu**2 * vv
        du = A + reaction - (B + 1) * uu + c * _second_difference(uu, U_BOUNDARY)
        dv = B * uu - reaction + c * _second_difference(vv, V_BOUNDARY)
        return np.concatenate((du, dv))

    brusselator.__doc__ = (f"Brusselator right-hand side on {n} grid points: "
                           f"u ({2 * n},), p (3,) -> ({2 * n},).")
    return brusselator


brusselator = make_brusselator(N_DEFAULT)


def jacobian_brusselator(u, p):
    """Hand-derived d brusselator / d u at one point: (2n, 2n), n = len(u) // 2."""
    n = len(u) // 2
    A, B, alpha = p[0], p[1], p[2]
    c = alpha * (n + 1) ** 2
    uu, vv = u[:n], u[n:]
    off = np.diag(np.full(n - 1, c), 1) + np.diag(np.full(n - 1, c), -1)
    J_uu = np.diag(2 * uu * vv - (B + 1) - 2 * c) + off
    J_uv = np.diag(uu**2)
    J_vu = np.diag(B - 2 * uu * vv)
    J_vv = np.diag(-uu**2 - 2 * c) + off
    return np.block([[J_uu, J_uv], [J_vu, J_vv]])


def initial_value(n=N_DEFAULT):
    """Hairer & Wanner's initial state u_i = 1 + sin(2 pi x_i), v_i = 3: (2n,)."""
    x = np.arange(1, n + 1) / (n + 1)
    return np.concatenate((1 + np.sin(2 * np.pi * x), np.full(n, 3.0)))


def main(argv=None):
    from symjac.examples import _run_demo

    rng = np.random.default_rng(0)
    u0 = initial_value(N_DEFAULT)
    U = u0 + rng.normal(0.0, 0.1, size=(5, 2 * N_DEFAULT))
    return _run_demo(brusselator, jacobian_brusselator, SHAPES, WRT,
                     point=(u0, P_DEFAULT), batch=(U, P_DEFAULT), argv=argv)


if __name__ == "__main__":
    main()
