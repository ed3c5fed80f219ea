"""The example models with their shapes declared for ``symjac codegen``.

    symjac codegen symjac/examples/models.py --out generated/cython --no-build

generates one module per declared function below. The golden copies in
``generated/cython`` and ``generated/numpy`` are regenerated this way (see the
README) and compared byte for byte by ``tests/test_codegen.py``.
"""

from __future__ import annotations

from symjac.front.spec import spec

from symjac.examples.brusselator import make_brusselator
from symjac.examples.lorenz import lorenz
from symjac.examples.mlp import N_HIDDEN, N_IN, N_OUT, make_mlp_with_constant_weights, mlp
from symjac.examples.objectives import lennard_jones, rosenbrock
from symjac.examples.rober import rober
from symjac.examples.vanderpol import vanderpol

BRUSSELATOR_POINTS = 5

rober = spec(y=3, k=3, wrt="y")(rober)
lorenz = spec(u=3, p=3, wrt="u")(lorenz)
vanderpol = spec(y=2, mu=(), wrt="y")(vanderpol)
brusselator = spec(u=2 * BRUSSELATOR_POINTS, p=3, wrt="u", name="brusselator")(make_brusselator(BRUSSELATOR_POINTS))
mlp = spec(x=N_IN, W1=(N_HIDDEN, N_IN), b1=N_HIDDEN, W2=(N_OUT, N_HIDDEN), b2=N_OUT, wrt="x")(mlp)
mlp_constant = spec(x=N_IN, wrt="x", name="mlp_constant")(make_mlp_with_constant_weights(seed=0))

lennard_jones = spec(x=9, kind="hessian", name="lennard_jones_hessian")(lennard_jones)
rosenbrock = spec(x=6, kind="gradient", name="rosenbrock_gradient")(rosenbrock)

# generated module name -> model function, for the regression tests: Jacobians ...
DECLARED = {name: function for name, function in [
    ("rober", rober), ("lorenz", lorenz), ("vanderpol", vanderpol),
    ("brusselator", brusselator), ("mlp", mlp), ("mlp_constant", mlp_constant),
]}
# ... and other derivative kinds
DECLARED_DERIVATIVES = {"lennard_jones_hessian": lennard_jones, "rosenbrock_gradient": rosenbrock}
