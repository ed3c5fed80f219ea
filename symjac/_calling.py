"""Runtime call convention shared by every generated module (numpy only).

Consumed by ``runtime.py`` (the ``symjac.jacobian`` wrapper) and embedded
verbatim into the standalone modules that ``symjac codegen`` writes, so the
Python API and generated modules validate, broadcast and lay out results in
exactly the same way. It imports only numpy and the standard library (scipy
lazily, for sparse results).

A kernel is called as ``kernel(args, outs, n, num_threads)``: ``args`` holds
one float64 array of shape ``(1 or n, size)`` per argument, with unit stride
along its second axis (a first-axis stride of 0 broadcasts it over the
batch); ``outs`` holds one C-contiguous float64 array of shape
``(n, size)`` per output buffer. Kernels fill their buffers completely,
structural zeros included, except the very sparse blocks listed in the
module's CALLER_ZEROES, which must arrive zeroed.
"""

import os

import numpy

_FLOAT = numpy.dtype(numpy.float64)


def _size(shape):
    size = 1
    for extent in shape:
        size *= extent
    return size


class Signature:
    """Argument names and shapes, differentiated arguments, output shapes."""

    __slots__ = ("names", "shapes", "sizes", "wrt", "output_shapes", "output_is_tuple", "wrt_is_tuple",
                 "nonzeros", "parallel_min_points", "caller_zeroes", "_memo")

    def __init__(self, names, shapes, wrt, output_shapes, output_is_tuple, wrt_is_tuple,
                 nonzeros=None, parallel_min_points=1, caller_zeroes=None):
        self.names = tuple(names)
        self.shapes = tuple(tuple(shape) for shape in shapes)
        self.sizes = tuple(_size(shape) for shape in self.shapes)
        self.wrt = tuple(wrt)
        self.output_shapes = tuple(tuple(shape) for shape in output_shapes)
        self.output_is_tuple = bool(output_is_tuple)
        self.wrt_is_tuple = bool(wrt_is_tuple)
        self.nonzeros = nonzeros  # per Jacobian block: flat indices of its structural non-zeros
        self.parallel_min_points = int(parallel_min_points)
        self.caller_zeroes = dict(caller_zeroes or {})  # kind -> per buffer: must it arrive zeroed?
        self._memo = {}  # buffer shapes per kind, sparse structure per ("sparse", block)

    def sparse_structure(self, block):
        """(rows, cols, CSR indptr) of a block's non-zeros, computed once."""
        known = self._memo.get(("sparse", block))
        if known is None:
            out_shape, arg_shape = self.blocks()[block]
            rows, cols = numpy.divmod(numpy.asarray(self.nonzeros[block], dtype=numpy.intp), _size(arg_shape))
            indptr = numpy.searchsorted(rows, numpy.arange(_size(out_shape) + 1))
            known = self._memo[("sparse", block)] = (rows, cols, indptr)
        return known

    def blocks(self):
        """(output shape, argument shape) of each Jacobian block, in order."""
        return [(out, self.shapes[j]) for out in self.output_shapes for j in self.wrt]

    def buffer_shapes(self, kind):
        """Core shapes of the buffers a kernel of ``kind`` writes, in order."""
        known = self._memo.get(kind)
        if known is None:
            known = self._memo[kind] = self._compute_buffer_shapes(kind)
        return known

    def _compute_buffer_shapes(self, kind):
        shapes = []
        if kind in ("function", "function_and_jacobian"):
            shapes += list(self.output_shapes)
        if kind in ("jacobian", "function_and_jacobian"):
            shapes += [out + arg for out, arg in self.blocks()]
        if kind == "jacobian_values":
            shapes += [(len(indices),) for indices in self.nonzeros]
        return shapes

    def nest(self, kind, items):
        """Arrange flat per-buffer items as the caller sees them.

        Jacobian blocks follow torch.autograd.functional.jacobian: a tuple of
        outputs and/or of ``wrt`` arguments gives tuples (of tuples).
        """
        items = list(items)
        if kind == "function":
            return tuple(items) if self.output_is_tuple else items[0]
        if kind == "function_and_jacobian":
            count = len(self.output_shapes)
            return self.nest("function", items[:count]), self.nest("jacobian", items[count:])
        # "jacobian" and "jacobian_values": one item per block
        width = len(self.wrt)
        rows = [items[i * width:(i + 1) * width] for i in range(len(self.output_shapes))]
        rows = [tuple(row) if self.wrt_is_tuple else row[0] for row in rows]
        return tuple(rows) if self.output_is_tuple else rows[0]

    def flatten(self, kind, nested):
        """Inverse of :meth:`nest` for a caller-supplied ``out=`` structure."""
        if kind == "function_and_jacobian":
            if not isinstance(nested, (tuple, list)) or len(nested) != 2:
                raise TypeError("out= for function_and_jacobian must be a pair (function_out, jacobian_out)")
            return self.flatten("function", nested[0]) + self.flatten("jacobian", nested[1])
        levels = [self.output_is_tuple] + ([self.wrt_is_tuple] if kind in ("jacobian", "jacobian_values") else [])
        items = [nested]
        for is_tuple in levels:
            if is_tuple:
                if not all(isinstance(item, (tuple, list)) for item in items):
                    raise TypeError("out= must have the same (tuple) structure as the result")
                items = [inner for item in items for inner in item]
        if len(items) != len(self.buffer_shapes(kind)):
            raise TypeError("out= must have the same (tuple) structure as the result")
        return items


def _as_float_array(value, name):
    if type(value) is numpy.ndarray and value.dtype == _FLOAT:
        return value
    array = numpy.asarray(value)
    if array.dtype.kind not in "biuf":
        if array.dtype.kind == "c":
            raise TypeError("argument %r is complex; symjac evaluates real Jacobians only" % name)
        raise TypeError("argument %r must hold real numbers, got dtype %s" % (name, array.dtype))
    return array.astype(_FLOAT, copy=False)


def prepare_arguments(signature, args):
    """Validate and broadcast call arguments.

    Returns ``(batch_shape, n, flat_args)`` where each flat argument has shape
    ``(1 or n, size)`` and is laid out as kernels require.
    """
    if len(args) != len(signature.names):
        raise TypeError(
            "expected %d arguments (%s), got %d" % (len(signature.names), ", ".join(signature.names), len(args))
        )
    arrays, batches = [], []
    for value, name, shape in zip(args, signature.names, signature.shapes):
        array = _as_float_array(value, name)
        core = len(shape)
        if array.ndim < core or tuple(array.shape[array.ndim - core:]) != shape:
            raise ValueError(
                "argument %r must have shape %s (optionally with leading batch dimensions), got shape %s"
                % (name, shape, array.shape)
            )
        arrays.append(array)
        batches.append(array.shape[:array.ndim - core])
    distinct = set(batches)
    distinct.discard(())
    try:
        batch_shape = distinct.pop() if len(distinct) == 1 else numpy.broadcast_shapes(*batches)
    except ValueError:
        shown = ", ".join("%s %s" % (name, batch) for name, batch in zip(signature.names, batches))
        raise ValueError("batch dimensions of the arguments do not broadcast together: %s" % shown) from None
    n = _size(batch_shape)
    flat_args = []
    for array, batch, shape, size in zip(arrays, batches, signature.shapes, signature.sizes):
        if _size(batch) == 1 and n != 0:
            flat = array.reshape(1, size)
        else:
            if batch != batch_shape:
                array = numpy.broadcast_to(array, batch_shape + shape)
            flat = array.reshape(n, size)
        strides = flat.strides
        if (size > 1 and strides[1] != 8) or strides[0] % 8 or not flat.flags.aligned:
            flat = numpy.ascontiguousarray(flat)
        flat_args.append(flat)
    return batch_shape, n, flat_args


def _check_out(out, shape, arguments):
    if not isinstance(out, numpy.ndarray):
        raise TypeError("out= must be a numpy array (or a tuple of them), got %s" % type(out).__name__)
    if out.dtype != _FLOAT:
        raise TypeError("out= must have dtype float64, got %s" % out.dtype)
    if out.shape != shape:
        raise ValueError("out= must have shape %s, got %s" % (shape, out.shape))
    if not out.flags.c_contiguous:
        raise ValueError("out= must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out= is read-only")
    for argument in arguments:
        if numpy.may_share_memory(out, argument):
            raise ValueError("out= overlaps an input argument")


def thread_count(signature, n, num_threads=None):
    """Threads for a batch of ``n`` points: one for small batches, else
    ``num_threads``, else ``$SYMJAC_NUM_THREADS``, else every core."""
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, numpy.integer)) or num_threads < 1:
            raise ValueError("num_threads must be a positive integer, got %r" % (num_threads,))
    if n < max(signature.parallel_min_points, 2):
        return 1
    if num_threads is None:
        try:
            num_threads = int(os.environ.get("SYMJAC_NUM_THREADS") or os.cpu_count() or 1)
        except ValueError:
            raise ValueError("SYMJAC_NUM_THREADS must be a positive integer") from None
    return max(1, int(num_threads))


def call(kernel, signature, kind, args, out=None, num_threads=None):
    """Evaluate ``kernel`` (of ``kind``) at ``args``; see the module docstring."""
    batch_shape, n, flat_args = prepare_arguments(signature, args)
    shapes = signature.buffer_shapes(kind)
    zeroed = signature.caller_zeroes.get(kind) or (False,) * len(shapes)
    if out is None:
        results = [(numpy.zeros if zero else numpy.empty)(batch_shape + shape) for shape, zero in zip(shapes, zeroed)]
    else:
        results = signature.flatten(kind, out)
        for number, (result, shape) in enumerate(zip(results, shapes)):
            _check_out(result, batch_shape + shape, args)
            if any(numpy.may_share_memory(result, other) for other in results[:number]):
                raise ValueError("out= arrays overlap each other")
        for result, zero in zip(results, zeroed):
            if zero:
                result[...] = 0.0
    buffers = tuple(result.reshape(n, _size(shape)) for result, shape in zip(results, shapes))
    kernel(tuple(flat_args), buffers, n, thread_count(signature, n, num_threads))
    return out if out is not None else signature.nest(kind, results)


def sparsity_patterns(signature):
    """Boolean structural non-zero pattern of each Jacobian block, nested like the result."""
    patterns = []
    for indices, (out_shape, arg_shape) in zip(signature.nonzeros, signature.blocks()):
        pattern = numpy.zeros(out_shape + arg_shape, dtype=bool)
        pattern.reshape(-1)[list(indices)] = True
        patterns.append(pattern)
    return signature.nest("jacobian", patterns)


def sparse_matrices(signature, values, format="csr"):
    """scipy sparse arrays (output size x argument size) from one point's
    packed values, nested like the Jacobian. scipy is imported only here."""
    import scipy.sparse

    if format not in ("csr", "csc", "coo"):
        raise ValueError("format must be 'csr', 'csc' or 'coo', got %r" % (format,))
    flat = signature.flatten("jacobian_values", values)
    matrices = []
    for number, (block_values, (out_shape, arg_shape)) in enumerate(zip(flat, signature.blocks())):
        if block_values.ndim != 1:
            raise ValueError("sparse results are for one point; use the packed values for a batch")
        rows, cols, indptr = signature.sparse_structure(number)
        shape = (_size(out_shape), _size(arg_shape))
        if format == "csr":  # the values are in row-major order already: no conversion
            matrix = scipy.sparse.csr_array((block_values, cols, indptr), shape=shape)
        else:
            matrix = scipy.sparse.coo_array((block_values, (rows, cols)), shape=shape).asformat(format)
        matrices.append(matrix)
    return signature.nest("jacobian_values", matrices)
