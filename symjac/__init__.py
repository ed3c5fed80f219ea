"""symjac: exact, fast Jacobians of numpy-style Python functions.

    >>> import numpy as np, symjac
    >>> jac = symjac.jacobian(lambda x: np.sin(x) * x[0], 2, backend="numpy")
    >>> jac(np.array([0.0, 1.0])).shape
    (2, 2)

The pipeline, one module per stage: trace -> diff -> simplify -> render
(printing, templates/) -> build -> runtime; ``api`` ties them together.
"""

__version__ = "0.1.0"

from .api import jacobian  # noqa: E402
from .errors import BuildError, CacheError, InvalidNameError, ShapeError, SymjacError, TracingError  # noqa: E402
from .runtime import Jacobian  # noqa: E402
from .spec import spec  # noqa: E402
from .trace import Traced, TracerArray, trace  # noqa: E402

__all__ = sorted([
    "BuildError",
    "CacheError",
    "InvalidNameError",
    "Jacobian",
    "ShapeError",
    "SymjacError",
    "Traced",
    "TracerArray",
    "TracingError",
    "__version__",
    "jacobian",
    "spec",
    "trace",
])
