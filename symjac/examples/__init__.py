"""Example models for symjac, each with a hand-derived Jacobian as test oracle.

Every model is plain numpy code (it runs on float and complex arrays as well as
under symjac's tracer) and its module provides:

- the model function (first argument is the one differentiated),
- ``jacobian_<name>(...)``: the analytic Jacobian w.r.t. that first argument,
  derived by hand in plain numpy, without symjac (shape: output + input),
- ``SHAPES`` (argument name -> shape, in argument order) and ``WRT``,
- a demo: ``python -m symjac.examples.<module> [--backend numpy|cython]``.

Models:

=============== ============================================ =====================
module          model                                        shapes
=============== ============================================ =====================
``rober``       Robertson stiff chemical kinetics            y (3,), k (3,)
``lorenz``      Lorenz-63 system                             u (3,), p (3,)
``vanderpol``   Van der Pol oscillator                       y (2,), mu ()
``brusselator`` 1-D Brusselator reaction-diffusion, n nodes  u (2n,), p (3,)
``mlp``         one-hidden-layer tanh MLP                    x (n_in,), weights
``hires``       HIRES stiff photochemistry (8 species)       y (8,), k (12,)
``pollu``       POLLU air-pollution kinetics (20 species)    y (20,), k (25,)
=============== ============================================ =====================

Large models for the scaling benchmark (sizes are arguments; checked against
complex-step or central differences instead of a hand Jacobian):
``brusselator2d`` (2-D periodic Brusselator, m x m grid), ``reaction_network``
(random, reproducible mass-action networks), ``pendulum`` (n-link pendulum
residual from ``sympy.physics.mechanics``). ``models`` declares the examples
with ``@symjac.spec`` for ``symjac codegen``.
"""

from __future__ import annotations

import argparse

import numpy as np

__all__ = ["brusselator", "brusselator2d", "hires", "lorenz", "mlp", "models", "pendulum", "pollu",
           "reaction_network", "rober", "vanderpol"]


def _core_shape(shape):
    """An int ``n`` means ``(n,)``; a tuple is already a shape."""
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _hand_batched(hand_jacobian, shapes, args):
    """Evaluate a single-point hand Jacobian over the broadcast batch dimensions.

    ``shapes`` gives each argument's core shape (``SHAPES.values()``); any extra
    leading dimensions of an argument are batch dimensions, broadcast together.
    """
    cores = [_core_shape(s) for s in shapes]
    args = [np.asarray(a) for a in args]
    batch = np.broadcast_shapes(*(a.shape[: a.ndim - len(c)] for a, c in zip(args, cores)))
    args = [np.broadcast_to(a, batch + c) for a, c in zip(args, cores)]
    first = hand_jacobian(*(a[(0,) * len(batch)] for a in args))
    out = np.empty(batch + first.shape, dtype=first.dtype)
    for idx in np.ndindex(*batch):
        out[idx] = hand_jacobian(*(a[idx] for a in args))
    return out


def _print_difference(J, J_hand):
    diff = np.max(np.abs(J - J_hand))
    relative = diff / np.max(np.abs(J_hand))
    print(f"max |symjac - hand| = {diff:.3e}  (relative to max |J|: {relative:.3e})")


def _run_demo(func, hand_jacobian, shapes, wrt, point, batch, argv=None):
    """Shared body of the examples' ``__main__`` demos.

    Builds ``symjac.jacobian(func, **shapes, wrt=wrt)``, evaluates it at
    ``point`` and at ``batch`` (tuples of positional arguments), prints the
    results and the largest difference from ``hand_jacobian``.
    """
    import symjac  # imported here so the models themselves need only numpy

    parser = argparse.ArgumentParser(description=f"symjac demo: Jacobian of {func.__name__}")
    parser.add_argument("--backend", choices=("cython", "numpy"), default=None,
                        help="code generation backend (default: symjac's default)")
    opts = parser.parse_args(argv)
    kwargs = {} if opts.backend is None else {"backend": opts.backend}

    jac = symjac.jacobian(func, **shapes, wrt=wrt, **kwargs)
    np.set_printoptions(precision=6, linewidth=120)
    print(f"{func.__name__}: d f / d {wrt}, backend={jac.backend}")

    J = jac(*point)
    J_hand = hand_jacobian(*point)
    print(f"\nJacobian at one point, shape {J.shape}:\n{J}")
    _print_difference(J, J_hand)

    Jb = jac(*batch)
    Jb_hand = _hand_batched(hand_jacobian, shapes.values(), batch)
    print(f"\nJacobian at a batch of points, shape {Jb.shape}:\n{Jb}")
    _print_difference(Jb, Jb_hand)
    return jac
