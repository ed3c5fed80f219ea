"""Runtime call convention shared by every generated module (numpy only).

Consumed by ``run/runtime.py`` (the ``symjac.jacobian`` wrapper) and embedded
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
_MISSING = object()  # an argument not given (bind_arguments)


def _size(shape):
    size = 1
    for extent in shape:
        size *= extent
    return size


def _nest(structure, items):
    if isinstance(structure, tuple):
        return tuple(_nest(inner, items) for inner in structure)
    return items[structure]


def _flatten(structure, nested, found):
    if isinstance(structure, tuple):
        if not isinstance(nested, (tuple, list)) or len(nested) != len(structure):
            raise TypeError("out= must have the same (tuple) structure as the result")
        for inner, item in zip(structure, nested):
            _flatten(inner, item, found)
    else:
        found[structure] = nested


class Signature:
    """What a generated module's kernels take and return.

    ``layouts`` maps each kernel to the core shapes of the buffers it writes
    and its ``structure``: nested tuples of buffer numbers, the way results
    are handed to the caller (torch.autograd.functional's convention: a tuple
    level per tuple of outputs or of ``wrt``). Packed kernels also have
    ``nonzeros`` (flat index of each value) and ``sparse_shapes`` per buffer.
    """

    __slots__ = ("names", "shapes", "sizes", "layouts", "nonzeros", "full_shapes", "sparse_shapes",
                 "parallel_min_points", "caller_zeroes", "_memo")

    def __init__(self, names, shapes, layouts, nonzeros=None, full_shapes=None, sparse_shapes=None,
                 parallel_min_points=1, caller_zeroes=None):
        self.names = tuple(names)
        self.shapes = tuple(tuple(shape) for shape in shapes)
        self.sizes = tuple(_size(shape) for shape in self.shapes)
        self.layouts = {kind: (tuple(tuple(s) for s in shapes_), structure)
                        for kind, (shapes_, structure) in layouts.items()}
        self.nonzeros = dict(nonzeros or {})
        self.full_shapes = dict(full_shapes or {})
        self.sparse_shapes = dict(sparse_shapes or {})
        self.parallel_min_points = int(parallel_min_points)
        self.caller_zeroes = dict(caller_zeroes or {})  # kind -> per buffer: must it arrive zeroed?
        self._memo = {}  # sparse structure per (kind, buffer)

    @classmethod
    def of_module(cls, module):
        """The signature recorded in a generated module's metadata."""
        return cls(module.ARGUMENT_NAMES, module.ARGUMENT_SHAPES, module.LAYOUTS, module.NONZEROS,
                   module.FULL_SHAPES, module.SPARSE_SHAPES, module.PARALLEL_MIN_POINTS, module.CALLER_ZEROES)

    def __repr__(self):
        arguments = ", ".join("%s=%s" % (name, shape) for name, shape in zip(self.names, self.shapes))
        kernels = ", ".join("%s -> %s" % (kind, _nest(structure, [shape for shape in shapes]))
                            for kind, (shapes, structure) in self.layouts.items())
        return "<Signature (%s); %s>" % (arguments, kernels)

    def buffer_shapes(self, kind):
        """Core shapes of the buffers a kernel of ``kind`` writes, in order."""
        return self.layouts[kind][0]

    def gufunc_signature(self, kind):
        """numpy's generalized-ufunc signature of ``kind``, e.g. ``"(3),(3)->(3,3)"``."""
        def dims(shape):
            return "(" + ",".join(map(str, shape)) + ")"

        return ",".join(map(dims, self.shapes)) + "->" + ",".join(map(dims, self.buffer_shapes(kind)))

    def sparse_structure(self, kind, buffer):
        """(rows, cols, CSR indptr) of a packed buffer's values, computed once."""
        known = self._memo.get((kind, buffer))
        if known is None:
            n_rows, n_cols = self.sparse_shapes[kind][buffer]
            rows, cols = numpy.divmod(numpy.asarray(self.nonzeros[kind][buffer], dtype=numpy.intp), n_cols)
            indptr = numpy.searchsorted(rows, numpy.arange(n_rows + 1))
            known = self._memo[(kind, buffer)] = (rows, cols, indptr)
        return known

    def nest(self, kind, items):
        """Arrange flat per-buffer items as the caller sees them."""
        return _nest(self.layouts[kind][1], list(items))

    def flatten(self, kind, nested):
        """Inverse of :meth:`nest` for a caller-supplied ``out=`` structure."""
        found = {}
        _flatten(self.layouts[kind][1], nested, found)
        return [found[number] for number in range(len(self.buffer_shapes(kind)))]


def check_dtype(dtype, name):
    """Refuse argument ``name`` of numpy ``dtype`` unless it holds real
    numbers: the errors every call and adapter gives."""
    if dtype.kind not in "biuf":
        if dtype.kind == "c":
            raise TypeError("argument %r is complex; symjac evaluates real Jacobians only" % name)
        raise TypeError("argument %r must hold real numbers, got dtype %s" % (name, dtype))


def batch_dimensions(array_shape, name, shape):
    """The leading (batch) dimensions of an argument ``name`` of shape
    ``array_shape`` declared with core ``shape``; a wrong core is a ValueError."""
    core = len(shape)
    if len(array_shape) < core or tuple(array_shape[len(array_shape) - core:]) != shape:
        raise ValueError(
            "argument %r must have shape %s (optionally with leading batch dimensions), got shape %s"
            % (name, shape, tuple(array_shape))
        )
    return tuple(array_shape[:len(array_shape) - core])


def as_float_array(value, name):
    """Argument ``name`` as a float64 array (no copy when it is one)."""
    if type(value) is numpy.ndarray and value.dtype == _FLOAT:
        return value
    if value is None:
        raise TypeError("argument %r is None: pass an array of real numbers" % name)
    array = numpy.asarray(value)
    check_dtype(array.dtype, name)
    return array.astype(_FLOAT, copy=False)


def bind_arguments(names, args, named, error=TypeError, what="this call"):
    """``args`` and keyword arguments ``named`` (argument name -> value) as one
    tuple in the order of ``names``, like Python binds a call: a name that is
    not an argument, an argument given twice or one missing is an ``error``
    naming the arguments there are."""
    if not named:
        return tuple(args)
    listed = ", ".join(names)
    if len(args) > len(names):
        raise error("%s takes %d arguments (%s), got %d" % (what, len(names), listed, len(args)))
    bound = list(args) + [_MISSING] * (len(names) - len(args))
    for name, value in named.items():
        if name not in names:
            raise error("%s got an unexpected keyword argument %r; its arguments are %s (and out=, num_threads=)"
                        % (what, name, listed))
        position = names.index(name)
        if bound[position] is not _MISSING:
            raise error("%s got argument %r twice (by position and by name); its arguments are %s"
                        % (what, name, listed))
        bound[position] = value
    missing = [name for name, value in zip(names, bound) if value is _MISSING]
    if missing:
        raise error("%s is missing argument(s) %s; its arguments are %s" % (what, ", ".join(missing), listed))
    return tuple(bound)


def bind_call(names, args, keywords, error=TypeError, what="this call"):
    """A call's ``(args, out, num_threads)`` from its positional ``args`` and
    its ``keywords`` (arguments by name, ``out=``, ``num_threads=``)."""
    keywords = dict(keywords)
    out = keywords.pop("out", None)
    num_threads = keywords.pop("num_threads", None)
    return bind_arguments(names, args, keywords, error, what), out, num_threads


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
        array = as_float_array(value, name)
        batches.append(batch_dimensions(array.shape, name, shape))
        arrays.append(array)
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


def sparsity_patterns(signature, kind):
    """Boolean structural non-zero pattern of each buffer of a packed ``kind``,
    in the full shape, nested like the packed result."""
    patterns = []
    for indices, shape in zip(signature.nonzeros[kind], signature.full_shapes[kind]):
        pattern = numpy.zeros(shape, dtype=bool)
        pattern.reshape(-1)[list(indices)] = True
        patterns.append(pattern)
    return signature.nest(kind, patterns)


def sparse_matrices(signature, kind, values, format="csr"):
    """scipy sparse arrays (rows x cols, see SPARSE_SHAPES) from one point's
    packed values of ``kind``, nested like them. scipy is imported only here."""
    import scipy.sparse

    if format not in ("csr", "csc", "coo"):
        raise ValueError("format must be 'csr', 'csc' or 'coo', got %r" % (format,))
    matrices = []
    for number, block_values in enumerate(signature.flatten(kind, values)):
        if block_values.ndim != 1:
            raise ValueError("sparse results are for one point; use the packed values for a batch")
        rows, cols, indptr = signature.sparse_structure(kind, number)
        shape = signature.sparse_shapes[kind][number]
        if format == "csr":  # the values are in row-major order already: no conversion
            matrix = scipy.sparse.csr_array((block_values, cols, indptr), shape=shape)
        else:
            matrix = scipy.sparse.coo_array((block_values, (rows, cols)), shape=shape).asformat(format)
        matrices.append(matrix)
    return signature.nest(kind, matrices)
