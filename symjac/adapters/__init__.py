"""Adapters: compiled derivatives in other libraries' terms.

torch operators (``torch``, public as ``symjac.torch``), lazy Dask arrays
(``dask``, public as ``symjac.dask``) and scipy LinearOperators (``linear``).
They use the public attributes of :class:`~symjac.run.runtime.Compiled` and
the entry points of ``symjac.api`` only.
"""
