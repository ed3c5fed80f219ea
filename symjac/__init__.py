"""symjac: exact, fast Jacobians of numpy-style Python functions.

    >>> import numpy as np, symjac
    >>> jac = symjac.jacobian(lambda x: np.sin(x) * x[0], 2, backend="numpy")
    >>> jac(np.array([0.0, 1.0])).shape
    (2, 2)

The pipeline, one folder per stage (each imports only the stages before it):
``front`` (trace) -> ``derive`` (differentiate) -> ``emit`` (simplify,
render) -> ``build`` (compile, cache) -> ``run`` (the objects users call);
``api`` ties them together, ``adapters`` give torch, Dask and scipy their
views of a compiled derivative.
"""

__version__ = "0.1.0"

from .adapters import dask as _dask  # noqa: E402, F401 - calls on Dask arrays go through it
from .api import function, gradient, hessian, jacobian, jvp, vjp  # noqa: E402
from .errors import (ArgumentError, BuildError, CacheError, DeclaredShapeError, InvalidNameError,  # noqa: E402
                     PrinterError, ShapeError, SymjacError, TracingError)
from .front.spec import spec  # noqa: E402
from .front.trace import Traced, trace  # noqa: E402
from .front.tracer import TracerArray  # noqa: E402
from .options import Options  # noqa: E402
from .run.runtime import JVP, VJP, Compiled, Gradient, Hessian, Jacobian  # noqa: E402

__all__ = sorted([
    "ArgumentError",
    "BuildError",
    "CacheError",
    "Compiled",
    "DeclaredShapeError",
    "Gradient",
    "Hessian",
    "InvalidNameError",
    "JVP",
    "Jacobian",
    "Options",
    "PrinterError",
    "ShapeError",
    "SymjacError",
    "Traced",
    "TracerArray",
    "TracingError",
    "VJP",
    "__version__",
    "function",
    "gradient",
    "hessian",
    "jacobian",
    "jvp",
    "spec",
    "trace",
    "vjp",
])
