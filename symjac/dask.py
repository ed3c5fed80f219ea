"""symjac.dask: compiled derivatives on Dask arrays (``pip install symjac[dask]``).

The public name of :mod:`symjac.adapters.dask`; see its docstring.
"""

from .adapters.dask import Kernel, call, chunk_points, is_dask_array, worker_environment

__all__ = ["Kernel", "call", "chunk_points", "is_dask_array", "worker_environment"]
