"""symjac.torch: compiled derivatives as torch operators (``pip install symjac[torch]``).

The public name of :mod:`symjac.adapters.torch`; see its docstring.
"""

from .adapters.torch import TorchArrayFunction, TorchFunction, function, function_and_jacobian, jacobian

__all__ = ["TorchArrayFunction", "TorchFunction", "function", "function_and_jacobian", "jacobian"]
