"""Stage 5, run: the callables that users hold.

Takes a loaded module (from ``build/builder.py``) and its :class:`~symjac.emit.source.Source`.
Everything a call needs is read from the module's metadata into a public
:class:`~symjac.run.calling.Signature` (argument names and shapes, the buffers
and nesting of every kernel, gufunc signatures), so adapters (torch, Dask)
build on public attributes only. The call convention itself (validation,
broadcasting, allocation, ``out=``, threads) lives in ``run/calling.py``, shared
with standalone generated modules. With the Cython backend the common call
(C-contiguous float64 arrays of the core shapes, with or without the same
batch dimensions, no ``out=``) runs in compiled code instead: the kernel
runtime's ``make_entry``, which hands every other call to ``run/calling.py``.

Every object here pickles by what defines it, the generated source and the
build options, never the compiled file: unpickling loads the module from the
receiving process's cache, or builds it there once (see ``build/builder.py``).
"""

from __future__ import annotations

from functools import cached_property, partial

import numpy as np

from ..build.builder import load
from ..derive.derivatives import DERIVATIVES
from ..emit.source import Source
from ..errors import ArgumentError, BuildError
from . import calling as _calling

__all__ = ["LAZY_CALLS", "RESULTS", "Compiled", "Gradient", "Hessian", "JVP", "Jacobian", "VJP"]

# Array types whose calls are built lazily by an adapter: (is such an array,
# call(compiled, kind, args, out, num_threads)). symjac.adapters.dask adds
# Dask's when symjac is imported, so this stage never imports an adapter.
LAZY_CALLS: list = []


def _restore(cls, source, options):
    """Unpickle: load (or build) the module of ``source`` in this process.

    A process that cannot build it (no C compiler, no Python headers) gets a
    :class:`~symjac.BuildError` that says so and keeps the compiler's command
    and log; a ``backend="numpy"`` object needs no compiler anywhere.
    """
    try:
        module = load(source, options.build_options())
    except BuildError as error:
        raise BuildError(
            f"cannot build the unpickled {cls.title().lower()} ({source.backend} backend, "
            f"{source.content_hash[:12]}) in this process: {error.args[0].splitlines()[0]}. "
            "Install a C compiler and the Python headers where it is unpickled, ship a module "
            "built by 'symjac codegen', or build it with backend='numpy', which needs no compiler",
            command=error.command, log=error.log) from error
    return cls(module, source, options)


class _Entries(dict):
    """Kind -> how a :class:`Compiled` calls that kernel, ``(args, out,
    num_threads)``: the compiled entry's ``call`` when there is one, else
    ``Compiled._call``; a kind that was not built raises AttributeError."""

    def __init__(self, compiled):
        super().__init__()
        self._compiled = compiled

    def __missing__(self, kind):
        self._compiled.kernel(kind)  # AttributeError when not built
        entry = self[kind] = partial(self._compiled._call, kind)
        return entry


class Compiled:
    """A compiled derivative: ``obj(*args, out=None, num_threads=None)``.

    ``DERIVATIVE`` names its description (``derive/derivatives.py``),
    ``KIND`` the kernel a call runs. Public attributes: ``signature``,
    ``source`` (generated text), ``backend``, ``content_hash``,
    ``argument_names``, ``wrt`` (names of the differentiated arguments),
    ``options`` (the :class:`~symjac.Options` it was built with, which every
    derivative built from it inherits), ``form`` ("scalar" or "array").
    """

    DERIVATIVE = "function"
    KIND = "function"

    def __init__(self, module, source: Source, options, derivative=None, derive=None, rebuild=None,
                 array=None) -> None:
        self.array = array  # the array form's programs (api.ArrayForm), None in the scalar form or once unpickled
        self._derivative = derivative
        self._derive = derive  # computes the derivative on first access when built from a cached source
        self._rebuild = rebuild  # (what, self, wrt) -> a derivative of self with its options (from symjac.api)
        self._module = module
        self._kernels = module.KERNELS
        self._source = source
        self.options = options
        self.signature = _calling.Signature.of_module(module)
        self.source = source.text
        self.backend = source.backend
        self.content_hash = source.content_hash
        self.argument_names = self.signature.names
        self.wrt = tuple(self.signature.names[j] for j in module.WRT)
        self._function_name = module.FUNCTION_NAME
        self.__doc__ = f"{self.title()} of {self._function_name} with respect to {', '.join(self.wrt)}."
        self._public_class = type(self)
        self._entries = _Entries(self)
        model = getattr(module, "MODEL", None)  # the kernel runtime's compiled calls (cython backend)
        if model is not None:
            thread_count = partial(_calling.thread_count, self.signature)
            for kind in self._kernels:
                entry = model.make_entry(kind, partial(self._call, kind), self.signature, thread_count, self._bind)
                self._entries[kind] = entry.call
                if kind == self.KIND:
                    # Calls go straight to the compiled entry: an instance-level
                    # subclass whose __call__ is the entry saves a Python frame
                    # on every call. Pickling goes through __reduce__, which
                    # names the public class.
                    self.__class__ = type(type(self).__name__, (type(self),), {"__call__": staticmethod(entry),
                                                                            "__module__": __name__})

    @property
    def form(self) -> str:
        """"array" when built as an array program (numpy matmul/einsum), else "scalar"."""
        return self.options.form

    @classmethod
    def title(cls) -> str:
        """What this class computes: its description's title."""
        return DERIVATIVES[cls.DERIVATIVE].title

    @property
    def derivative(self):
        """The symbolic derivative (``diff.Derivative``); computed on first
        access when the module came from a cached source; None once unpickled."""
        if self._derivative is None and self._derive is not None:
            self._derivative, self._derive = self._derive(), None
        return self._derivative

    @property
    def gufunc_signature(self) -> str:
        """numpy's generalized-ufunc signature of a call, e.g. ``"(3),(3)->(3,3)"``."""
        return self.signature.gufunc_signature(self.KIND)

    def __call__(self, *args, out=None, num_threads=None, **named):
        return self._call(self.KIND, self._arguments(args, named), out, num_threads)

    def _arguments(self, args, named):
        """Positional ``args`` plus arguments by name, in order (an ArgumentError names the valid ones)."""
        return _calling.bind_arguments(self.signature.names, args, named, ArgumentError, self._what()) if named else args

    def _bind(self, args, keywords):
        """For the compiled entry: a call's (args, out, num_threads) from its keywords."""
        return _calling.bind_call(self.signature.names, args, keywords, ArgumentError, self._what())

    def _what(self) -> str:
        return f"the {self.title().lower()} of {self._function_name}"

    def _call(self, kind, args, out=None, num_threads=None):
        """The general call in Python: Dask arrays, then ``_calling.call``."""
        for is_lazy, lazy_call in LAZY_CALLS:
            if any(type(arg) is not np.ndarray and is_lazy(arg) for arg in args):
                return lazy_call(self, kind, args, out, num_threads)
        return _calling.call(self.kernel(kind), self.signature, kind, args, out, num_threads)

    def kernel(self, kind):
        """The loaded kernel ``kind`` (called as ``run/calling.py`` says); AttributeError when not built."""
        try:
            return self._kernels[kind]
        except KeyError:
            raise AttributeError(f"this {self.title().lower()} was built without the {kind!r} kernel; "
                                 f"pass kernels=(..., {kind!r}) when building it") from None

    def traced(self):
        """What this object computes, as a traced function (``symjac.trace``'s
        result) that can be differentiated again: ``symjac.jacobian(obj, wrt=...)``."""
        derivative = self._symbolic()
        return derivative.as_traced() if derivative.order else derivative.traced

    def _symbolic(self):
        if self.derivative is None:
            if self.form == "array":
                raise ValueError(f"this {self.title().lower()} is in the array form, which has no sympy form: "
                                 "differentiate it with symjac (symjac.jacobian(obj), obj.derive(...)), or build "
                                 "it with form='scalar'")
            raise ValueError(f"this {self.title().lower()} was unpickled or loaded without its symbolic form; "
                             "build it again from the function to differentiate or transform it")
        return self.derivative

    def derive(self, what: str, wrt=None) -> "Compiled":
        """Derivative ``what`` ("jacobian", "jvp", ...: a ``DERIVATIVES`` name)
        of what this object computes, built with its ``options``."""
        if self._rebuild is None:
            raise ValueError(f"this {self.title().lower()} was unpickled or loaded: build it again from the "
                             "function to differentiate it")
        return self._rebuild(what, self, wrt)

    def __reduce__(self):
        # The cache directory is this process's business: the receiving
        # process uses its own (SYMJAC_CACHE_DIR or the user's cache).
        return _restore, (self._public_class, self._source, self.options)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={s}" for n, s in zip(self.signature.names, self.signature.shapes))
        return (f"<symjac.{self._public_class.__name__} of {self._function_name}({shapes}) "
                f"wrt {', '.join(self.wrt)}, {self.form} form, {self.backend}>")


class _Packed:
    """Sparse results of a kernel with packed values (``PACKED``)."""

    PACKED = ""

    def values(self, *args, out=None, num_threads=None, **named):
        """Only the structural non-zeros: per buffer, batch shape + (nnz,), in ``indices()`` order."""
        return self._entries[self.PACKED](self._arguments(args, named), out, num_threads)

    def indices(self):
        """(rows, cols) of each buffer's non-zeros, in ``values()`` order, nested like them."""
        count = len(self.signature.nonzeros[self.PACKED])
        pairs = [self.signature.sparse_structure(self.PACKED, b)[:2] for b in range(count)]
        return self.signature.nest(self.PACKED, pairs)

    @property
    def nonzeros(self) -> int:
        """Structural non-zeros in all packed buffers."""
        return sum(len(indices) for indices in self.signature.nonzeros[self.PACKED])


class Jacobian(_Packed, Compiled):
    """A compiled Jacobian: ``jac(*args, out=None, num_threads=None)``.

    Also ``values``/``indices``/``sparse``/``sparsity_matrix`` (sparse
    results), ``sparsity`` (read-only bool arrays, output shape + input shape,
    nested like the result), ``function`` and ``function_and_jacobian`` when
    built with those kernels, and ``linear_operator``.
    """

    DERIVATIVE = KIND = "jacobian"
    PACKED = "jacobian_values"

    def sparse(self, *args, format="csr", **named):
        """The Jacobian at one point as ``scipy.sparse`` arrays (csr, csc or coo).

        Each block is a matrix of (output size) x (argument size); nothing
        dense is allocated. Needs scipy.
        """
        return _calling.sparse_matrices(self.signature, self.PACKED, self.values(*args, **named), format)

    def sparsity_matrix(self, format="csr"):
        """The structural pattern as scipy sparse arrays of ones, for
        ``solve_ivp(jac_sparsity=...)`` and ``least_squares(jac_sparsity=...)``."""
        ones = [np.ones(len(indices)) for indices in self.signature.nonzeros[self.PACKED]]
        return _calling.sparse_matrices(self.signature, self.PACKED, self.signature.nest(self.PACKED, ones), format)

    @cached_property
    def sparsity(self):
        patterns = _calling.sparsity_patterns(self.signature, self.PACKED)
        for pattern in self.signature.flatten(self.PACKED, patterns):
            pattern.flags.writeable = False
        return patterns

    def function(self, *args, out=None, num_threads=None, **named):
        """The traced function's value, computed by the generated code."""
        return self._entries["function"](self._arguments(args, named), out, num_threads)

    def function_and_jacobian(self, *args, out=None, num_threads=None, **named):
        """``(value, jacobian)`` in one pass sharing subexpressions."""
        return self._entries["function_and_jacobian"](self._arguments(args, named), out, num_threads)

    def linear_operator(self, *args, **named):
        """``scipy.sparse.linalg.LinearOperator`` of the Jacobian at one point:
        ``matvec`` is J v and ``rmatvec`` uᵀJ, by the generated J v and uᵀJ
        kernels (built on first use with this Jacobian's backend and flags);
        J is never formed. Needs one output and one ``wrt`` argument."""
        from .linear import linear_operator

        return linear_operator(self, self._arguments(args, named))


class Hessian(_Packed, Compiled):
    """A compiled Hessian: ``H(*args)`` gives blocks output shape + x.shape + x.shape.

    ``values(*args)`` packs, per output, the lower triangle (row >= col) of
    the Hessian over the concatenated ``wrt`` arguments, in ``indices()``
    order (cyipopt's ``hessianstructure()``); ``sparse(*args)`` is the full
    symmetric matrix; ``sparsity`` the symmetric pattern nested like ``H``.
    """

    DERIVATIVE = KIND = "hessian"
    PACKED = "hessian_values"

    def sparse(self, *args, format="csr", **named):
        """The full symmetric Hessian at one point, both triangles, per output
        as a scipy sparse array of (output size * n) x n, n = total wrt size."""
        import scipy.sparse

        lower = _calling.sparse_matrices(self.signature, self.PACKED, self.values(*args, **named), "coo")
        flat = self.signature.flatten(self.PACKED, lower)
        full = []
        for matrix, (rows, n) in zip(flat, self.signature.sparse_shapes[self.PACKED]):
            within = matrix.row % n
            off = within != matrix.col  # mirror the strictly lower entries of each output's n x n matrix
            base = matrix.row - within
            mirrored = scipy.sparse.coo_array((matrix.data[off], (base[off] + matrix.col[off], within[off])),
                                              shape=(rows, n))
            full.append((matrix + mirrored).asformat(format))
        return self.signature.nest(self.PACKED, full)

    @cached_property
    def sparsity(self):
        lower = self.signature.flatten(self.PACKED, _calling.sparsity_patterns(self.signature, self.PACKED))
        sizes = [self.signature.sizes[self.signature.names.index(name)] for name in self.wrt]
        shapes = [self.signature.shapes[self.signature.names.index(name)] for name in self.wrt]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        blocks = []
        for pattern in lower:
            full = pattern | np.swapaxes(pattern, -1, -2)
            out_shape = pattern.shape[:-2]
            for a in range(len(sizes)):
                for b in range(len(sizes)):
                    block = full[..., offsets[a]:offsets[a + 1], offsets[b]:offsets[b + 1]]
                    block = np.ascontiguousarray(block).reshape(out_shape + shapes[a] + shapes[b])
                    block.flags.writeable = False
                    blocks.append(block)
        return self.signature.nest(self.KIND, blocks)


class Gradient(Compiled):
    """A compiled gradient of a scalar function, by reverse mode: shaped like ``wrt``."""

    DERIVATIVE = "gradient"


class JVP(Compiled):
    """Jacobian-vector products: ``jvp(*args, v)`` = J v, v shaped like ``wrt``."""

    DERIVATIVE = "jvp"


class VJP(Compiled):
    """Vector-Jacobian products: ``vjp(*args, u)`` = uᵀJ, u shaped like the output."""

    DERIVATIVE = "vjp"


# The result class of each derivative description (tests/test_registries.py
# checks that every description has exactly one).
RESULTS = {cls.DERIVATIVE: cls for cls in (Compiled, Jacobian, Hessian, Gradient, JVP, VJP)}
