"""
Sparsity of a 1,000-state Jacobian
==================================

The 1-D Brusselator (Hairer & Wanner) on 500 grid points has 1,000 states:
``u`` and ``v`` at every point. symjac differentiates each output only in the
symbols it contains, so the structural non-zeros come free: four 500 x 500
blocks, tridiagonal on the diagonal (diffusion) and diagonal off it
(reaction). ``jac.sparse`` hands the Jacobian to a stiff solver without a
dense matrix.
"""

import matplotlib.pyplot as plt
import numpy as np

import symjac
from symjac.examples.brusselator import P_DEFAULT, initial_value, make_brusselator

n = 500
jac = symjac.jacobian(make_brusselator(n), u=2 * n, p=3, wrt="u")
S = jac.sparse(initial_value(n), P_DEFAULT)
print(f"{S.shape[0]:,} x {S.shape[1]:,} Jacobian, {S.nnz:,} structural non-zeros "
      f"({S.nnz / S.shape[0] / S.shape[1]:.2%} of the entries)")
assert S.nnz == jac.sparsity.sum()

fig, (whole, corner) = plt.subplots(1, 2, figsize=(9, 4.5))
whole.spy(jac.sparsity, markersize=0.5)
whole.set_title("d f / d u, 1,000 x 1,000", pad=12)
corner.spy(jac.sparsity[n - 10:n + 10, n - 10:n + 10], markersize=5)
corner.set_title("around the block corner (rows, cols 490-509)", pad=12)
corner.set_xticks(range(0, 20, 5), [str(n - 10 + i) for i in range(0, 20, 5)])
corner.set_yticks(range(0, 20, 5), [str(n - 10 + i) for i in range(0, 20, 5)])
fig.tight_layout()
plt.show()
