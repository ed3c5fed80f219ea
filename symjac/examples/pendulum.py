"""An n-link planar pendulum from ``sympy.physics.mechanics``, in residual form.

Link i (i = 0..n-1) is a massless rod of length l_i hinged at the end of link
i-1 (link 0 at the fixed origin) carrying a point mass m_i at its far end.
q_i is the absolute angle of link i from the downward vertical, u_i = q_i'
its angular velocity, and gravity g pulls along the vertical. Kane's method
(``sympy.physics.mechanics.KanesMethod``; Kane & Levinson, *Dynamics: Theory
and Applications*, McGraw-Hill 1985; the n-link pendulum is the classic
benchmark of the PyDy project, Gede et al., "Constrained multibody dynamics
with Python", ASME IDETC 2013) gives the equations of motion

    M(q) u' = F(q, u),

M the n-by-n mass matrix, F the forcing (gravity and centripetal terms).
This module exposes them as the implicit residual

    residual(q, u, ud, p) = M(q) ud - F(q, u)           (n,)

the form implicit DAE/ODE solvers differentiate: d residual / d (q, u, ud).

Shapes: ``make_pendulum_residual(n)`` returns ``residual(q, u, ud, p)`` with
``q``, ``u``, ``ud`` (n,) and ``p`` (2n + 1,) = (m_0..m_{n-1}, l_0..l_{n-1}, g)
-> (n,). Differentiate it with

    symjac.jacobian(residual, n, n, n, 2 * n + 1, wrt=("q", "u", "ud"))

The residual is written with sympy: the mechanics derivation is done once per
n (cached with ``functools.lru_cache``; it takes seconds for n = 10 and much
longer for n = 20) and the result, a ``sympy.Matrix`` in plain symbols, is
evaluated by ``xreplace``-ing those symbols with the traced entries
(``sympy.sympify(q[i])`` is the symbol symjac traces with). Outside tracing,
``numeric_residual(n)`` is the same expression lambdified for numpy, the
independent reference for tests. ``derivation_seconds(n)`` reports how long
the mechanics derivation took.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import sympy

N_DEFAULT = 5
MASS_DEFAULT = 1.0
LENGTH_DEFAULT = 1.0
G_DEFAULT = 9.81


@functools.lru_cache(maxsize=None)
def pendulum_equations(n):
    """Kane's equations of the n-link pendulum, in plain symbols.

    Returns ``(q, u, ud, p, M, F, seconds)``: tuples of sympy Symbols
    ``q``, ``u``, ``ud`` (n each) and ``p`` (2n + 1), the mass matrix ``M``
    (n, n) and forcing ``F`` (n, 1) as sympy Matrices, and the wall time of
    the derivation.
    """
    from sympy.physics import mechanics as me

    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the pendulum needs a positive int number of links, got {n!r}")
    n = int(n)
    started = time.perf_counter()
    qt = me.dynamicsymbols(f"q:{n}")
    ut = me.dynamicsymbols(f"u:{n}")
    masses = sympy.symbols(f"m:{n}", real=True)
    lengths = sympy.symbols(f"l:{n}", real=True)
    g = sympy.Symbol("g", real=True)

    N = me.ReferenceFrame("N")  # N.x points down, N.y horizontally
    origin = me.Point("O")
    origin.set_vel(N, 0)
    particles, loads = [], []
    hinge = origin
    for i in range(n):
        link = N.orientnew(f"A{i}", "Axis", (qt[i], N.z))
        link.set_ang_vel(N, ut[i] * N.z)
        bob = hinge.locatenew(f"P{i}", lengths[i] * link.x)
        bob.v2pt_theory(hinge, N, link)
        particles.append(me.Particle(f"bob{i}", bob, masses[i]))
        loads.append((bob, masses[i] * g * N.x))
        hinge = bob
    kinematics = [qt[i].diff(me.dynamicsymbols._t) - ut[i] for i in range(n)]
    kane = me.KanesMethod(N, q_ind=qt, u_ind=ut, kd_eqs=kinematics)
    kane.kanes_equations(particles, loads)

    q = sympy.symbols(f"q:{n}", real=True)
    u = sympy.symbols(f"u:{n}", real=True)
    ud = sympy.symbols(f"ud:{n}", real=True)
    plain = {**dict(zip(qt, q)), **dict(zip(ut, u))}
    M = kane.mass_matrix.xreplace(plain)
    F = kane.forcing.xreplace(plain)
    leftover = (M.free_symbols | F.free_symbols) - set(q) - set(u) - set(masses) - set(lengths) - {g}
    if leftover:
        raise RuntimeError(f"unexpected symbols in the pendulum equations: {leftover}")
    return q, u, ud, (*masses, *lengths, g), M, F, time.perf_counter() - started


def derivation_seconds(n):
    """Wall time of the (cached) mechanics derivation for ``n`` links."""
    return pendulum_equations(n)[-1]


@functools.lru_cache(maxsize=None)
def residual_expression(n):
    """``(q, u, ud, p, R)``: symbols and the residual R = M ud - F, (n, 1)."""
    q, u, ud, p, M, F, _ = pendulum_equations(n)
    return q, u, ud, p, M * sympy.Matrix(ud) - F


def make_pendulum_residual(n=N_DEFAULT):
    """``residual(q, u, ud, p) = M(q) ud - F(q, u)`` for the n-link pendulum."""
    q, u, ud, p, R = residual_expression(n)
    symbols = (*q, *u, *ud, *p)

    def pendulum_residual(q, u, ud, p):
        values = [sympy.sympify(array[i]) for array, size in ((q, n), (u, n), (ud, n), (p, 2 * n + 1))
                  for i in range(size)]
        return R.xreplace(dict(zip(symbols, values)))

    pendulum_residual.__doc__ = (f"{n}-link pendulum residual M(q) ud - F(q, u): q, u, ud ({n},), "
                                 f"p ({2 * n + 1},) -> ({n},).")
    return pendulum_residual


def numeric_residual(n=N_DEFAULT):
    """The same residual lambdified for numpy (float arrays in, (n,) out): a test reference."""
    q, u, ud, p, R = residual_expression(n)
    compiled = sympy.lambdify((q, u, ud, p), list(R), modules="numpy")

    def residual(q, u, ud, p):
        return np.array(compiled(q, u, ud, p), dtype=np.float64)

    return residual


def default_parameters(n=N_DEFAULT, mass=MASS_DEFAULT, length=LENGTH_DEFAULT, g=G_DEFAULT):
    """p = (masses, lengths, g) with equal links: (2n + 1,)."""
    return np.concatenate((np.full(n, float(mass)), np.full(n, float(length)), [float(g)]))
