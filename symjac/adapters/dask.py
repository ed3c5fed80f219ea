"""symjac on Dask arrays: every compiled derivative called on a ``dask.array.Array``.

An adapter on top of the run stage: this module adds itself to
``run.runtime.LAZY_CALLS`` (symjac imports it), so any call that has a Dask
array among its arguments comes here (checked with
``hasattr(arg, "__dask_graph__")``, so nothing imports Dask until a Dask
array shows up). Every kernel kind works the same way — ``jac(...)``,
``values``, ``function``, ``function_and_jacobian``, Hessians, gradients,
J v and uᵀJ — and the result is lazy, nested exactly like the numpy call's::

    import dask.array as da
    Y = da.from_zarr("states.zarr")             # (10**9, 3), chunked along the points
    J = jac(Y, k)                               # lazy (10**9, 3, 3); chunks follow Y's
    da.linalg.norm(J, axis=(-2, -1)).to_zarr("norms.zarr")

How the graph is built (``dask.array.blockwise``, as ``apply_gufunc`` would,
but without its copies):

- Each argument gets a unique index name per core axis, and ``meta`` is
  given, so Dask never calls the kernel on fake data to guess dtypes or
  shapes. Blocks reach the kernel as they are (``concatenate=False``):
  ``apply_gufunc`` concatenates every block's core dimensions, which copies
  the block even when it is the only one.
- Batch (loop) dimensions keep their chunks; where arguments are chunked
  differently along the same batch dimension the chunks are unified. Core
  dimensions are rechunked into one chunk.
- A small numpy argument without batch dimensions (a parameter vector) and
  the compiled object itself (:class:`Kernel`) are written into each task,
  so every task depends only on its blocks and Dask's linear fusion merges a
  block's producers and consumers with the kernel into one task (a graph key
  that all tasks share stops that fusion; distributed spends milliseconds of
  CPU per task). Above ``EMBED_BYTES`` (a parameter's bytes, the kernel's
  pickle) each is one graph key instead, stored once in the graph and sent
  once per worker. A numpy argument with batch dimensions is split along the
  Dask arguments' chunks. The kernel pickles by its generated source and
  build options; a worker process loads it once — from its own build cache,
  or building it there once — on first use, not when a scheduler merely
  unpickles the graph.
- Inside a task the kernel runs with ``num_threads=1``: Dask already runs one
  task per worker thread, and OpenMP threads on top would oversubscribe the
  cores. ``jac(Y, k, num_threads=n)`` overrides it (for example with one
  worker thread per machine and ``n`` cores). The kernels release the GIL, so
  the threaded scheduler runs tasks in parallel.
- ``out=`` is refused: store a lazy result with ``dask.array.store`` or
  ``to_zarr`` instead.

Chunk sizes: Dask's guidance is about 100 ms of work per task (much smaller
tasks spend their time in the scheduler, much larger ones leave cores idle
and use memory). :func:`chunk_points` measures the kernel's cost per point
on a sample and returns the number of points per chunk for a target time.

Dask (``dask[array]``, and ``distributed`` for clusters) is the optional
extra ``symjac[dask]``.
"""

from __future__ import annotations

import operator
import pickle
import threading
import time

import numpy as np

from ..run import calling as _calling
from ..run.runtime import LAZY_CALLS

__all__ = ["Kernel", "call", "chunk_points", "is_dask_array", "worker_environment"]

TARGET_SECONDS = 0.1  # Dask's rule of thumb for the work in one task
TASK_THREADS = 1  # kernel threads inside a task unless the call says otherwise
EMBED_BYTES = 2**16  # parameters (their bytes) and kernels (pickled) up to this size go into each task


def is_dask_array(value) -> bool:
    """True for Dask collections (detected without importing Dask)."""
    return hasattr(value, "__dask_graph__")


# --------------------------------------------------------------------------
# the compiled object as a graph key

_restored: dict = {}
_restored_lock = threading.Lock()


class Kernel:
    """What each task calls: a compiled object and the kernel kind to run.

    Pickles as the compiled object's own pickle state (its class, generated
    source and build options) and loads the module lazily, on the first
    block a process computes, once per process and key. Unpickling alone
    (for instance on a scheduler that holds the graph) never builds anything.
    """

    def __init__(self, compiled, kind: str, num_threads: int) -> None:
        self._compiled = compiled
        self._reduced = compiled.__reduce__()  # (restore, (public class, Source, Options)): pickle's protocol
        self.kind = kind
        self.num_threads = num_threads

    def __reduce__(self):
        return _kernel_from_state, (self._reduced, self.kind, self.num_threads)

    def __dask_tokenize__(self):
        cls, source, options = self._reduced[1]
        return ("symjac.Kernel", cls.__name__, source.content_hash, repr(options), self.kind, self.num_threads)

    def compiled(self):
        if self._compiled is None:
            restore, (cls, source, options) = self._reduced
            key = (cls, source.content_hash, source.backend, options)
            with _restored_lock:
                found = _restored.get(key)
                if found is None:
                    found = _restored[key] = restore(cls, source, options)
            self._compiled = found
        return self._compiled

    def __call__(self, *blocks):
        compiled = self.compiled()
        result = _calling.call(compiled.kernel(self.kind), compiled.signature, self.kind, blocks, None,
                               self.num_threads)
        flat = compiled.signature.flatten(self.kind, result)
        return tuple(flat) if len(flat) > 1 else flat[0]

    def __repr__(self) -> str:
        return f"<symjac.dask.Kernel {self.kind} of {self._reduced[1][1].content_hash[:12]}>"


def _kernel_from_state(state, kind, num_threads):
    kernel = Kernel.__new__(Kernel)
    kernel._compiled = None
    kernel._reduced = state
    kernel.kind = kind
    kernel.num_threads = num_threads
    return kernel


def _run_block(*blocks, kernel):
    return kernel(*map(_only_block, blocks))


def _only_block(block):
    """The one numpy block behind Dask's nested lists: core dimensions are one
    chunk, and ``concatenate=False`` hands them over without a copy (Dask's
    ``concatenate=True``, which ``apply_gufunc`` uses, copies every input
    block, even a single one: 40 % of a HIRES task's time)."""
    while isinstance(block, list):
        (block,) = block
    return block


# --------------------------------------------------------------------------
# building the lazy call


def _check_argument(value, name, shape):
    """Dask arrays stay lazy; anything else becomes a float64 numpy array.
    Wrong dtypes and core shapes raise the same errors as a numpy call."""
    if is_dask_array(value):
        if not hasattr(value, "chunks"):
            raise TypeError(f"argument {name!r} is a {type(value).__name__}; symjac takes dask arrays "
                            "(dask.array.Array), not other Dask collections")
        _calling.check_dtype(value.dtype, name)
        array = value
    else:
        array = _calling.as_float_array(value, name)
    _calling.batch_dimensions(array.shape, name, shape)
    return array


def call(compiled, kind, args, out=None, num_threads=None):
    """``compiled``'s ``kind`` kernel over Dask arrays: a lazy result nested like the numpy call's."""
    import dask
    import dask.array as da
    from dask.array.core import unify_chunks

    if out is not None:
        raise TypeError("out= cannot be used with dask arrays: the result is lazy; write it with "
                        "dask.array.store(result, target) or result.to_zarr(...)")
    if num_threads is not None:
        _calling.thread_count(compiled.signature, 0, num_threads)  # validates it
    compiled.kernel(kind)  # a missing kernel fails now, not in a task
    signature = compiled.signature
    if len(args) != len(signature.names):
        raise TypeError("expected %d arguments (%s), got %d"
                        % (len(signature.names), ", ".join(signature.names), len(args)))
    arrays = [_check_argument(value, name, shape)
              for value, name, shape in zip(args, signature.names, signature.shapes)]
    loops = [array.ndim - len(shape) for array, shape in zip(arrays, signature.shapes)]
    n_loop = max(loops)
    try:
        np.broadcast_shapes(*(array.shape[:loop] for array, loop in zip(arrays, loops)))
    except ValueError:
        shown = ", ".join("%s %s" % (name, array.shape[:loop]) for name, array, loop in
                          zip(signature.names, arrays, loops))
        raise ValueError("batch dimensions of the arguments do not broadcast together: %s" % shown) from None

    # Chunks along each batch dimension (counted from the right), from the dask arguments.
    loop_chunks = {}
    for array, loop in zip(arrays, loops):
        if is_dask_array(array):
            for axis in range(loop):
                position = n_loop - loop + axis
                if array.shape[axis] != 1:
                    loop_chunks.setdefault(position, array.chunks[axis])

    operands, indices, core_names = [], [], []
    for number, (array, loop, shape) in enumerate(zip(arrays, loops, signature.shapes)):
        cores = tuple(f"a{number}_{axis}" for axis in range(len(shape)))
        core_names.append(cores)
        if is_dask_array(array):
            if any(len(array.chunks[axis]) > 1 for axis in range(loop, array.ndim)):
                array = array.rechunk({axis: -1 for axis in range(loop, array.ndim)})
            if array.dtype != np.float64:
                array = array.astype(np.float64)
        elif any(extent != 1 for extent in array.shape[:loop]):
            chunks = tuple(loop_chunks.get(n_loop - loop + axis, -1) if array.shape[axis] != 1 else 1
                           for axis in range(loop)) + (-1,) * len(shape)
            array = da.from_array(array, chunks=chunks)
        elif array.nbytes <= EMBED_BYTES:  # a small parameter: written into each task (fusable)
            operands.append(array)
            indices.append(None)
            continue
        else:  # a large parameter: one graph key, read with stride 0 by every block
            array = da.from_array(array, chunks=array.shape or -1)
        operands.append(array)
        indices.append(tuple(f"l{n_loop - loop + axis}" for axis in range(loop)) + cores)
    _, operands = unify_chunks(*[x for pair in zip(operands, indices) for x in pair])

    shapes = signature.buffer_shapes(kind)
    loop_index = tuple(f"l{axis}" for axis in range(n_loop))
    kernel = Kernel(compiled, kind, TASK_THREADS if num_threads is None else int(num_threads))
    if len(pickle.dumps(kernel)) > EMBED_BYTES:
        kernel = dask.delayed(kernel, pure=True, traverse=False)
    arginds = [x for pair in zip(operands, indices) for x in pair]
    metas = [np.empty((0,) * (n_loop + len(shape)), dtype=np.float64) for shape in shapes]

    def core_axes(number, shape):
        return {f"o{number}_{axis}": extent for axis, extent in enumerate(shape)}

    if len(shapes) == 1:
        results = [da.blockwise(_run_block, loop_index + tuple(core_axes(0, shapes[0])), *arginds,
                                new_axes=core_axes(0, shapes[0]), concatenate=False, meta=metas[0],
                                kernel=kernel)]
    else:  # one task computes the tuple of outputs; each output takes its item
        both = da.blockwise(_run_block, loop_index, *arginds, concatenate=False, meta=tuple(metas),
                            kernel=kernel)
        results = [da.blockwise(operator.getitem, loop_index + tuple(core_axes(number, shape)),
                                both, loop_index, number, None, new_axes=core_axes(number, shape),
                                meta=metas[number])
                   for number, shape in enumerate(shapes)]
    return signature.nest(kind, results)


# --------------------------------------------------------------------------
# chunk sizes


def chunk_points(compiled, *args, kind=None, target_seconds=TARGET_SECONDS, max_bytes=128 * 2**20,
                 sample_points=1000, num_threads=1):
    """Points per chunk so that one task takes about ``target_seconds``.

    ``args`` are the call's arguments at one point (or a batch: its first
    point is used), numpy arrays; ``kind`` the kernel (default: the call's).
    The kernel is timed on ``sample_points`` copies of that point with
    ``num_threads`` (1: as inside a Dask task) until at least 20 ms have
    passed; the cost per point sets the chunk, capped so that the inputs and
    outputs of one task stay under ``max_bytes`` (Dask's default
    ``array.chunk-size`` is 128 MiB). Work you do on each block afterwards
    (a reduction, an SVD) adds to the time per point: include it by timing
    it yourself and passing a smaller ``target_seconds``, or choose the
    chunk from the whole pipeline's time per point.
    """
    kind = kind or compiled.KIND
    signature = compiled.signature
    point = []
    for value, shape in zip(args, signature.shapes):
        array = np.asarray(value, dtype=np.float64)
        array = array.reshape((-1,) + shape)[0] if array.ndim > len(shape) else array
        point.append(np.broadcast_to(array, (sample_points,) + shape))
    kernel = compiled.kernel(kind)
    batch = [np.ascontiguousarray(array) for array in point]
    elapsed, calls = 0.0, 0
    while elapsed < 0.02:
        start = time.perf_counter()
        _calling.call(kernel, signature, kind, batch, None, num_threads)
        elapsed += time.perf_counter() - start
        calls += 1
    seconds_per_point = elapsed / (calls * sample_points)
    bytes_per_point = 8 * (sum(signature.sizes) + sum(_calling._size(shape) for shape in signature.buffer_shapes(kind)))
    points = int(target_seconds / max(seconds_per_point, 1e-12))
    return max(1, min(points, max_bytes // bytes_per_point))


# --------------------------------------------------------------------------
# worker processes


def worker_environment(block_bytes: int = 2**28) -> dict[str, str]:
    """Environment variables that keep glibc's freed memory for the next block.

    A task allocates its blocks (the kernel's output, the reduction's
    temporaries) afresh. Distributed starts workers with
    ``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes glibc's mmap threshold
    at 128 KiB, and a worker's task thread allocates from its own arena, whose
    heaps cannot hold blocks over 64 MiB. Either way every block is a new
    ``mmap`` that the kernel page-faults in again: HIRES's kernel ran 3x
    slower that way than on reused memory (0.13-0.17 s against 0.041-0.046 s
    per 2x10^6 points, measured in ``benchmarks/dask_throughput.py``'s
    setting). These variables put every allocation up to ``block_bytes`` on
    the one main heap (``MALLOC_ARENA_MAX=1``, ``MALLOC_MMAP_THRESHOLD_``) and
    keep up to ``block_bytes`` of freed memory there (``MALLOC_TRIM_THRESHOLD_``).
    The price: a worker's resident memory stays up to ``block_bytes`` above
    what it uses, and its threads share one arena.

    glibc reads them when a process starts, so they must be in the
    environment the workers start with. Distributed's nanny takes them from
    the environment of the process that starts it (which overrides Dask's
    ``distributed.nanny.pre-spawn-environ``)::

        os.environ.update(symjac.dask.worker_environment())  # before LocalCluster(...)

    or on the command line: ``env MALLOC_ARENA_MAX=1 ... dask worker tcp://...``.
    """
    block_bytes = int(block_bytes)
    if block_bytes < 2**20:
        raise ValueError(f"block_bytes={block_bytes}: give at least 1 MiB (the largest block a task allocates)")
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(block_bytes),
            "MALLOC_TRIM_THRESHOLD_": str(block_bytes)}


LAZY_CALLS.append((is_dask_array, call))  # calls on Dask arrays come here (see run/runtime.py)
