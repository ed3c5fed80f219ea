"""A one-hidden-layer tanh multilayer perceptron.

    mlp(x) = W2 @ tanh(W1 @ x + b1) + b2

Shapes: ``x`` (n_in,), ``W1`` (n_hidden, n_in), ``b1`` (n_hidden,),
``W2`` (n_out, n_hidden), ``b2`` (n_out,) -> ``f`` (n_out,); the Jacobian
d f / d x is (n_out, n_in):

    J = W2 @ diag(1 - tanh(W1 @ x + b1)^2) @ W1

Two ways to hand it to symjac: ``mlp`` takes the weights as arguments (runtime
parameters of the generated code), ``make_mlp_with_constant_weights`` returns
``f(x)`` with the weights captured as numpy constants in a closure (baked into
the generated code). ``SHAPES`` uses ``N_IN``, ``N_HIDDEN``, ``N_OUT``.
"""

from __future__ import annotations

import numpy as np

N_IN, N_HIDDEN, N_OUT = 3, 8, 2
SHAPES = {"x": N_IN, "W1": (N_HIDDEN, N_IN), "b1": N_HIDDEN,
          "W2": (N_OUT, N_HIDDEN), "b2": N_OUT}
WRT = "x"


def mlp(x, W1, b1, W2, b2):
    """The network output for input ``x``."""
    return W2 @ np.tanh(W1 @ x + b1) + b2


def jacobian_mlp(x, W1, b1, W2, b2):
    """Hand-derived d mlp / d x at one point: (n_out, n_in)."""
    h = np.tanh(W1 @ x + b1)
    return W2 @ ((1 - h**2)[:, None] * W1)


def random_weights(n_in=N_IN, n_hidden=N_HIDDEN, n_out=N_OUT, seed=0):
    """Reproducible weights ``(W1, b1, W2, b2)``, float64, scaled like 1/sqrt(fan_in)."""
    rng = np.random.default_rng(seed)
    W1 = rng.normal(size=(n_hidden, n_in)) / np.sqrt(n_in)
    b1 = rng.normal(scale=0.1, size=n_hidden)
    W2 = rng.normal(size=(n_out, n_hidden)) / np.sqrt(n_hidden)
    b2 = rng.normal(scale=0.1, size=n_out)
    return W1, b1, W2, b2


def make_mlp_with_constant_weights(seed=0, n_in=N_IN, n_hidden=N_HIDDEN, n_out=N_OUT):
    """``f(x) = mlp(x, *random_weights(n_in, n_hidden, n_out, seed))``.

    The weights are numpy constants captured by the closure; they are also
    available as ``f.weights`` so a caller can compare against ``mlp``.
    """
    W1, b1, W2, b2 = random_weights(n_in, n_hidden, n_out, seed)

    def mlp_const(x):
        return mlp(x, W1, b1, W2, b2)

    mlp_const.__doc__ = (f"tanh MLP {n_in} -> {n_hidden} -> {n_out} with constant "
                         f"weights (seed {seed}): x ({n_in},) -> ({n_out},).")
    mlp_const.weights = (W1, b1, W2, b2)
    return mlp_const


def main(argv=None):
    from symjac.examples import _run_demo

    rng = np.random.default_rng(0)
    weights = random_weights(seed=0)
    x0 = np.array([0.5, -1.0, 2.0])
    X = rng.normal(size=(5, N_IN))
    return _run_demo(mlp, jacobian_mlp, SHAPES, WRT,
                     point=(x0, *weights), batch=(X, *weights), argv=argv)


if __name__ == "__main__":
    main()
