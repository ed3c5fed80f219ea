"""symjac: exact, fast Jacobians of numpy-style Python functions.

    >>> import numpy as np, symjac
    >>> jac = symjac.jacobian(lambda x: np.sin(x) * x[0], 2, backend="numpy")
    >>> jac(np.array([0.0, 1.0])).shape
    (2, 2)

The pipeline, one module per stage: trace (tracer, ops) -> diff
(derivatives, reverse) -> simplify (kinds) -> render (backends, printing,
templates/) -> build (toolchain, cache) -> runtime (_calling); ``api`` ties
them together.
"""

__version__ = "0.1.0"

from .api import gradient, hessian, jacobian, jvp, vjp  # noqa: E402
from .errors import BuildError, CacheError, InvalidNameError, ShapeError, SymjacError, TracingError  # noqa: E402
from .run.runtime import JVP, VJP, Compiled, Gradient, Hessian, Jacobian  # noqa: E402
from .front.spec import spec  # noqa: E402
from .front.trace import Traced, trace  # noqa: E402
from .front.tracer import TracerArray  # noqa: E402

__all__ = sorted([
    "BuildError",
    "CacheError",
    "Compiled",
    "Gradient",
    "Hessian",
    "InvalidNameError",
    "JVP",
    "Jacobian",
    "ShapeError",
    "SymjacError",
    "Traced",
    "TracerArray",
    "TracingError",
    "VJP",
    "__version__",
    "gradient",
    "hessian",
    "jacobian",
    "jvp",
    "spec",
    "trace",
    "vjp",
])
