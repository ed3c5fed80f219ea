"""Stage 5, run: loaded modules become the objects users call.

Takes a loaded module and its source; gives :class:`~symjac.run.runtime.Compiled`
objects (``runtime``) that validate, broadcast and call kernels through one
call convention (``calling``, also embedded in standalone generated modules).
Imports only the stages before it.
"""
