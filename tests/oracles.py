"""Independent Jacobian oracles for the numeric tests.

Plain numpy, no symjac: the tests compare symjac's generated Jacobians with
these finite-difference estimates of the original Python function.

Both oracles follow symjac's (and torch.autograd.functional.jacobian's) shape
convention: the Jacobian of an output of shape ``out_shape`` with respect to
an input of shape ``in_shape`` has shape ``out_shape + in_shape``.  When the
function returns a tuple, the oracle returns a tuple with one Jacobian per
output.

``complex_step_jacobian``
    ``imag(f(x + i*h*e_j)) / h``.  No subtractive cancellation, so it is
    accurate to rounding error for any ``h`` (default 1e-20).  Valid only
    where every operation f performs is complex-analytic in numpy (no abs,
    maximum/minimum, comparisons, clip, hypot, arctan2, cbrt, norm ...).

``central_difference_jacobian``
    ``(f(x + h*e_j) - f(x - h*e_j)) / (2*h)``.  Truncation error O(h**2),
    rounding error O(eps/h): about 1e-10 relative for h = 1e-6.  Works for
    piecewise-smooth functions as long as the point is further than ``h``
    from every kink.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["central_difference_jacobian", "complex_step_jacobian"]


def _prepare(args: Sequence[Any], wrt_index: int) -> tuple[list[Any], np.ndarray]:
    args = list(args)
    x = np.array(args[wrt_index], dtype=np.float64, order="C")  # a private C-ordered copy: reshape(-1) is a view
    return args, x


def _call(f: Callable, args: list[Any], wrt_index: int, x: np.ndarray):
    call_args = list(args)
    call_args[wrt_index] = x
    out = f(*call_args)
    if isinstance(out, tuple):
        return tuple(np.asarray(o) for o in out), True
    return (np.asarray(out),), False


def _assemble(columns: list[tuple[np.ndarray, ...]], in_shape: tuple[int, ...], is_tuple: bool):
    """columns[j][i] = d output_i / d x_flat[j] -> output_i.shape + in_shape."""
    n_out = len(columns[0]) if columns else 0
    jacs = []
    for i in range(n_out):
        out_shape = columns[0][i].shape
        stacked = np.stack([col[i] for col in columns], axis=-1)  # out_shape + (n,)
        jacs.append(stacked.reshape(out_shape + in_shape))
    return tuple(jacs) if is_tuple else jacs[0]


def complex_step_jacobian(f: Callable, args: Sequence[Any], wrt_index: int, h: float = 1e-20):
    """Jacobian of ``f(*args)`` with respect to ``args[wrt_index]`` by complex step."""
    args, x = _prepare(args, wrt_index)
    in_shape = x.shape
    columns = []
    is_tuple = False
    for j in range(x.size):
        xc = x.astype(np.complex128)
        xc.reshape(-1)[j] += 1j * h
        outs, is_tuple = _call(f, args, wrt_index, xc)
        columns.append(tuple(np.imag(o).astype(np.float64) / h for o in outs))
    return _assemble(columns, in_shape, is_tuple)


def central_difference_jacobian(f: Callable, args: Sequence[Any], wrt_index: int, h: float = 1e-6):
    """Jacobian of ``f(*args)`` with respect to ``args[wrt_index]`` by central differences."""
    args, x = _prepare(args, wrt_index)
    in_shape = x.shape
    columns = []
    is_tuple = False
    for j in range(x.size):
        xp = x.copy()
        xm = x.copy()
        xp.reshape(-1)[j] += h
        xm.reshape(-1)[j] -= h
        step = xp.reshape(-1)[j] - xm.reshape(-1)[j]  # the step actually taken, after rounding
        plus, is_tuple = _call(f, args, wrt_index, xp)
        minus, _ = _call(f, args, wrt_index, xm)
        columns.append(tuple((p.astype(np.float64) - m.astype(np.float64)) / step for p, m in zip(plus, minus)))
    return _assemble(columns, in_shape, is_tuple)
