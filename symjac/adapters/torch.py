"""symjac.torch: compiled functions and exact derivatives as torch operators.

An adapter over the runtime (``run/runtime.py``): it reads only the public
attributes of a compiled object (``signature``, ``argument_names``,
``content_hash``, ``traced()``) and never the generated code. Each compiled
kernel becomes one ``torch.library.custom_op`` (CPU), with

- a fake implementation (output shapes from the broadcast batch dimensions),
  so ``torch.compile(fullgraph=True)`` traces through it;
- a vmap rule: the kernels already broadcast leading batch dimensions, so the
  vmapped dimension is moved in front and the kernel runs once;
- an autograd formula whose backward is itself a symjac operator: the
  vector-Jacobian product of whatever the forward computes, with respect to
  every argument, generated and compiled like any derivative (for the
  Jacobian operator: the incoming gradient contracted with dJ/d(every
  argument), one kernel call for the whole batch). That operator has a
  backward of its own, built on first use, so double backward works too.

    forward op  = kernel K of a compiled object, computing T(args)
    backward op = symjac.vjp(T, wrt=all arguments)(args, grads)   (built eagerly)
    its backward = symjac.vjp(of that, wrt=all)                   (built on first use)

Calls take torch tensors on the CPU, all float32 or all float64 (computed in
float64; results have the input dtype); leading batch dimensions broadcast as
in symjac. float64 inputs and results are shared with numpy without copies
(``Tensor.numpy()``, ``torch.from_numpy``). Kernels run on
``torch.get_num_threads()`` threads.

    import symjac.torch
    jac = symjac.torch.jacobian(decoder, h=8, W1=(16, 8), b1=16, W2=(8, 16), b2=8, wrt="h")
    J = jac(h, W1, b1, W2, b2)              # (N, 8, 8), differentiable in h and the weights
"""

from __future__ import annotations

import hashlib
import inspect
import re
import threading

import numpy as np
import torch

from ..api import array_form, as_traced, compile_derivative, resolve_wrt
from ..emit.array_printing import load_module
from ..progress import Reporter
from ..errors import ArgumentError
from ..options import Options
from ..run import calling as _calling
from ..run.runtime import Compiled
from ..front.trace import Traced

__all__ = ["TorchArrayFunction", "TorchFunction", "function", "function_and_jacobian", "jacobian"]

_NAMESPACE = "symjac"
_OP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FLOATS = (torch.float32, torch.float64)
_OPS: dict[str, "_Op"] = {}  # op name -> operator, one per compiled kernel in this process
_LOCK = threading.RLock()


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (no copy for float64; real tensors have no conjugate bit)."""
    tensor = tensor.detach()
    return (tensor.resolve_neg() if tensor.is_neg() else tensor).numpy()


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    result = torch.from_numpy(array)
    return result if dtype == torch.float64 else result.to(dtype)


def _broadcast(batches, names, what):
    """The broadcast of the arguments' batch shapes, as numpy's call convention
    reports it (plain ints; SymInts in fake mode use torch's). Shapes that are
    suffixes of the longest skip torch.broadcast_shapes (~8 µs a call)."""
    longest = ()
    for batch in batches:  # not max(key=len): torch.compile traces this
        if len(batch) > len(longest):
            longest = batch
    if all(batch == longest[len(longest) - len(batch):] for batch in batches):
        return tuple(longest)
    try:
        return tuple(torch.broadcast_shapes(*batches))
    except RuntimeError:
        shown = ", ".join(f"{name} {batch}" for name, batch in zip(names, batches))
        raise ValueError(f"batch dimensions of the arguments of {what} do not broadcast together: {shown}") from None


def _check_tensors(args, names, shapes, what):
    """Validate call arguments; returns their common dtype and batch shapes. Errors name the argument."""
    if len(args) != len(names):
        raise TypeError(f"{what} takes {len(names)} arguments ({', '.join(names)}), got {len(args)}")
    dtype = first = None
    batches = []
    for value, name, shape in zip(args, names, shapes):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"argument {name!r} of {what} must be a torch.Tensor, got {type(value).__name__} "
                            "(use torch.as_tensor or torch.from_numpy)")
        if not value.is_cpu:
            raise ValueError(f"argument {name!r} of {what} is on device {value.device}; symjac.torch computes on "
                             "the CPU only and copies nothing to another device: move it with .cpu()")
        if value.dtype not in _FLOATS:
            kind = "complex" if value.dtype.is_complex else ("integer" if not value.dtype.is_floating_point
                                                               else "unsupported floating")
            raise TypeError(f"argument {name!r} of {what} has {kind} dtype {value.dtype}; symjac.torch takes "
                            "real float32 or float64 tensors")
        if dtype is None:
            dtype, first = value.dtype, name
        elif value.dtype != dtype:
            raise TypeError(f"argument {name!r} of {what} is {value.dtype} but {first!r} is {dtype}: mixed float32 "
                            "and float64 arguments; convert them to one dtype")
        batches.append(_calling.batch_dimensions(tuple(value.shape), name, shape))
    return dtype, batches


class _Op:
    """One compiled kernel as a registered torch operator (flat tensors in and out).

    ``compiled`` computes ``traced`` (a :class:`~symjac.front.trace.Traced`) with
    kernel ``kind``; its backward is the symjac vector-Jacobian product of
    ``traced`` with respect to every argument, built by :meth:`backward_op`.
    """

    def __init__(self, compiled: Compiled, kind: str, traced: Traced, name: str, order: int) -> None:
        self.compiled = compiled
        self.kind = kind
        self.traced = traced
        self.name = name
        self.order = order  # 0: the function's own kernel; n: an n-th derivative of it
        self.names = compiled.signature.names
        self.shapes = compiled.signature.shapes
        self.buffer_shapes = compiled.signature.buffer_shapes(kind)
        self.qualname = f"{_NAMESPACE}::{name}"
        self._backward = None
        self._run = compiled if kind == compiled.KIND else getattr(compiled, kind)
        self._register()

    def _register(self):
        arguments = ", ".join(f"Tensor a{number}" for number in range(len(self.names)))
        outputs = len(self.buffer_shapes)
        returns = "Tensor" if outputs == 1 else "(" + ", ".join(["Tensor"] * outputs) + ")"
        self.op = torch.library.custom_op(self.qualname, self._impl, mutates_args=(), device_types="cpu",
                                          schema=f"({arguments}) -> {returns}")
        self.op.register_fake(self._fake)
        self.op.register_autograd(self._backward_formula, setup_context=self._setup_context)
        self.op.register_vmap(self._vmap)

    def _impl(self, *args):
        # TorchFunction checked the arguments; a direct call of the op is checked by
        # the dispatcher (CPU only) and symjac's call convention (shapes, real dtypes)
        dtype = args[0].dtype
        results = self._run(*map(_numpy, args), num_threads=torch.get_num_threads())
        flat = self.compiled.signature.flatten(self.kind, results)
        tensors = tuple(_tensor(array, dtype) for array in flat)
        return tensors[0] if len(tensors) == 1 else tensors

    def _fake(self, *args):
        dtype, batches = _check_tensors(args, self.names, self.shapes, self.qualname)
        batch = tuple(torch.broadcast_shapes(*batches))  # SymInts under torch.compile(dynamic=True)
        tensors = tuple(args[0].new_empty(batch + shape, dtype=dtype) for shape in self.buffer_shapes)
        return tensors[0] if len(tensors) == 1 else tensors

    def _vmap(self, info, in_dims, *args):
        # The kernel broadcasts leading batch dimensions: put the vmapped
        # dimension first, with singleton dimensions so that every argument's
        # own batch dimensions still line up, and call the kernel once.
        depth = max(arg.dim() - (dim is not None) - len(shape) for arg, dim, shape in zip(args, in_dims, self.shapes))
        moved = []
        for arg, dim, shape in zip(args, in_dims, self.shapes):
            if dim is not None:
                arg = arg.movedim(dim, 0)
                own = arg.dim() - 1 - len(shape)
                arg = arg.reshape((arg.shape[0],) + (1,) * (depth - own) + tuple(arg.shape[1:]))
            moved.append(arg)
        if all(dim is None for dim in in_dims):
            result = self.op(*moved)
            return result, (None if len(self.buffer_shapes) == 1 else (None,) * len(self.buffer_shapes))
        result = self.op(*moved)
        # an unbatched output cannot happen: some argument carries the vmapped dimension in front
        return result, (0 if len(self.buffer_shapes) == 1 else (0,) * len(self.buffer_shapes))

    def _setup_context(self, ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _backward_formula(self, ctx, *grads):
        inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if not any(needs):
            return (None,) * len(inputs)
        dtype = inputs[0].dtype
        cotangents = []
        for grad, shape, output in zip(grads, self.buffer_shapes, range(len(self.buffer_shapes))):
            if grad is None:
                batch = torch.broadcast_shapes(*(x.shape[:x.dim() - len(s)] for x, s in zip(inputs, self.shapes)))
                grad = inputs[0].new_zeros(tuple(batch) + shape)
            elif grad.dtype != dtype:
                grad = grad.to(dtype)
            cotangents.append(grad)
        backward = self.backward_op()
        results = backward.op(*inputs, *cotangents)
        if not isinstance(results, (tuple, list)):
            results = (results,)
        # a broadcast argument's gradient is summed over the batch dimensions it was broadcast along
        return tuple((result if result.shape == x.shape else result.sum_to_size(x.shape)) if need else None
                     for result, x, need in zip(results, inputs, needs))

    def backward_op(self) -> "_Op":
        """The operator computing this one's vector-Jacobian product (built once)."""
        with _LOCK:
            if self._backward is None:
                names = ", ".join(self.names)
                try:
                    vjp = compile_derivative("vjp", self.traced, wrt=tuple(range(len(self.names))),
                                             options=self.compiled.options)
                except Exception as error:
                    raise RuntimeError(f"symjac.torch could not build the backward of {self.qualname} (derivative "
                                       f"of order {self.order + 1} with respect to {names}): {error}") from error
                self._backward = operator(vjp, "function", vjp.traced(), self.order + 1)
            return self._backward

    def __call__(self, *args):
        return self.op(*args)


def _op_name(compiled: Compiled, kind: str) -> str:
    key = repr((compiled.content_hash, kind, compiled.options.with_(verbose=False)))
    name = f"{kind}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    if not _OP_NAME.match(name):  # kinds are identifiers; this guards the registry against a bad new one
        raise ValueError(f"symjac.torch: {name!r} is not a valid torch operator name")
    return name


def operator(compiled: Compiled, kind: str, traced: Traced, order: int) -> _Op:
    """The torch operator of ``compiled``'s kernel ``kind`` (registered once per
    process); its backward is built with ``compiled.options``."""
    name = _op_name(compiled, kind)
    with _LOCK:
        op = _OPS.get(name)
        if op is None:
            op = _OPS[name] = _Op(compiled, kind, traced, name, order)
        return op


class TorchFunction:
    """A symjac kernel as a callable on torch tensors: ``obj(*tensors)``.

    Results are nested like symjac's (a tuple for a tuple of outputs or of
    ``wrt``; ``(value, jacobian)`` for ``function_and_jacobian``) and are
    differentiable with respect to every argument that requires grad.
    ``compiled`` is the underlying symjac object, ``op`` the registered torch
    operator (``torch.ops.symjac.<name>``), ``backward`` the symjac object
    of its backward (a vector-Jacobian product with respect to every argument).
    """

    form = "scalar"

    def __init__(self, op: _Op, title: str) -> None:
        self._op = op
        self.compiled = op.compiled
        self.kind = op.kind
        self.signature = op.compiled.signature
        self.argument_names = self.signature.names
        self.wrt = op.compiled.wrt
        self.op = op.op
        self.op_name = op.qualname  # "symjac::<kind>_<hash>": torch.ops.symjac.<kind>_<hash>
        self.title = title
        self.__doc__ = f"{title} of {op.traced.function_name} as a torch operator ({op.qualname})."

    @property
    def backward(self) -> Compiled:
        return self._op.backward_op().compiled

    def __reduce__(self):
        # What defines it, never the registered operator (a closure torch cannot
        # pickle): the compiled forward and backward (each pickles by its
        # source, see run/runtime.py) and the traced functions that build the
        # next derivative on first use. The receiving process registers the
        # operators again, loading or building the kernels in its own cache.
        backward = self._op.backward_op()
        return _restore, (self.compiled, self.kind, self.title, self._op.traced, self._op.order, backward.compiled,
                          backward.traced)

    def __call__(self, *args, **named):
        what = f"symjac.torch.{self.title}"
        if named:
            args = _calling.bind_arguments(self._op.names, args, named, ArgumentError, what)
        _broadcast(_check_tensors(args, self._op.names, self._op.shapes, what)[1], self._op.names, what)
        try:
            result = self._op(*args)
        except RuntimeError as error:
            if "functorch transforms" not in str(error):
                raise
            raise RuntimeError(
                f"symjac.torch.{self.title}: torch.func.grad, jacrev, jacfwd, jvp and vjp cannot differentiate "
                "torch custom operators (torch.func.vmap works). Differentiate with torch.autograd instead "
                "(loss.backward(), torch.autograd.grad, torch.autograd.functional), or let symjac build the "
                "derivative (symjac.torch.jacobian)") from error
        flat = list(result) if isinstance(result, (tuple, list)) else [result]
        return self.signature.nest(self.kind, flat)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={s}" for n, s in zip(self.signature.names, self.signature.shapes))
        return f"<symjac.torch.{self.title} ({shapes}) wrt {', '.join(self.wrt)}: torch.ops.{self._op.qualname}>"


def _restore(compiled, kind, title, traced, order, backward, backward_traced) -> TorchFunction:
    """Unpickle a :class:`TorchFunction`: its operator and its backward's, registered in this process."""
    op = operator(compiled, kind, traced, order)
    with _LOCK:
        if op._backward is None:
            op._backward = operator(backward, "function", backward_traced, order + 1)
    return TorchFunction(op, title)


def _function_of(compiled: Compiled, kernel: str) -> Traced:
    """What ``compiled``'s kernel ``kernel`` computes, as a traced function: what its backward differentiates."""
    if kernel == "function":
        return compiled.traced()
    jacobian = compiled.traced()  # the Jacobian as a function of the arguments
    if kernel == "jacobian":
        return jacobian
    value = compiled.derivative.traced  # function_and_jacobian: both, as one function with a tuple of outputs
    return Traced(f"{value.function_name}_and_{jacobian.function_name}", value.arguments,
                  value.outputs + jacobian.outputs, True)


def _build(kernel, function, shapes, named_shapes, wrt, options):
    what = "function" if kernel == "function" else "jacobian"
    reporter = Reporter(enabled=options.verbose)
    array = array_form(what, function, shapes, named_shapes, wrt=wrt, kernels=(kernel,), options=options,
                       target="torch", reporter=reporter)
    if array is not None:
        return TorchArrayFunction(array.source, kernel, array.wrt, options.with_(form="array"))
    traced = as_traced(function, shapes, named_shapes)
    resolve_wrt(traced, wrt)
    # only the kernel asked for (symjac.jacobian would add the Jacobian kernel to function_and_jacobian)
    compiled = compile_derivative(what, traced, wrt=wrt, kernels=(kernel,), options=options.with_(form="scalar"))
    op = operator(compiled, kernel, _function_of(compiled, kernel), 0 if kernel == "function" else 1)
    # the backward is what training needs: build it now, not in the middle of a backward pass
    op.backward_op()
    return TorchFunction(op, kernel)


class TorchArrayFunction:
    """A derivative in the array form, as plain torch operations: ``obj(*tensors)``.

    The generated code (``source``) uses torch operations only, with
    constants made in the arguments' dtype and on their device: it runs on
    any device and floating dtype torch supports (float32 stays float32),
    torch's autograd differentiates through it (backward and double
    backward), and ``torch.compile`` sees ordinary operations. Pickles by its
    source and options (nothing to build in the receiving process).
    """

    form = "array"

    def __init__(self, source, kind: str, wrt: tuple[str, ...], options: Options) -> None:
        self._source = source
        self.source = source.text
        self.kind = kind
        self.wrt = tuple(wrt)
        self.options = options
        self._kernel = load_module(source.text, "torch").kernel  # with its lines in linecache: torch.compile reads them
        self.argument_names = tuple(inspect.signature(self._kernel).parameters)
        self.__doc__ = f"{kind} as torch operations (array form)."

    def __call__(self, *args, **kwargs):
        # the checks cost a few microseconds a call (at small sizes the whole op
        # costs tens): messages are made only when a check fails
        if kwargs:
            args = _calling.bind_arguments(self.argument_names, args, kwargs, ArgumentError,
                                           f"symjac.torch.{self.kind}")
        if len(args) != len(self.argument_names):
            raise TypeError(f"symjac.torch.{self.kind} takes {len(self.argument_names)} arguments "
                            f"({', '.join(self.argument_names)}), got {len(args)}")
        for value in args:
            if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
                self._refuse(args)
        return self._kernel(*args)

    def _refuse(self, args):
        for value, name in zip(args, self.argument_names):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"argument {name!r} of symjac.torch.{self.kind} must be a torch.Tensor, got "
                                f"{type(value).__name__} (use torch.as_tensor or torch.from_numpy)")
            if not value.dtype.is_floating_point:
                raise TypeError(f"argument {name!r} of symjac.torch.{self.kind} has dtype {value.dtype}; "
                                "the array form takes floating-point tensors")

    def __reduce__(self):
        return TorchArrayFunction, (self._source, self.kind, self.wrt, self.options)

    def __repr__(self) -> str:
        return (f"<symjac.torch.{self.kind} ({', '.join(self.argument_names)}) wrt {', '.join(self.wrt)}: "
                "array form, torch operations>")


_DOCS = """
    Arguments as for ``symjac.jacobian``: shapes by position or by name,
    ``wrt``, and the build options (``backend``, ``form``, ``flags``,
    ``native``, ``vector_math``, ``verbose``), which the backward inherits.
    Calls take CPU tensors, all float32 or all float64, with leading batch
    dimensions that broadcast; results have the input dtype and are
    differentiable with respect to every argument that requires grad. The
    backward kernel (a vector-Jacobian product with respect to every
    argument) is built here.
"""


def _entry_point(kernel: str, summary: str, takes_wrt: bool = True):
    """``symjac.torch.<kernel>``: the kernel ``kernel`` as a differentiable torch operator."""
    def entry(function, *shapes, wrt=None, **keywords):
        if wrt is not None and not takes_wrt:
            raise TypeError(f"symjac.torch.{kernel} differentiates with respect to every argument: it takes no wrt")
        options, named_shapes = Options.split(keywords)
        return _build(kernel, function, shapes, named_shapes, wrt, options)

    entry.__name__ = entry.__qualname__ = kernel
    entry.__module__ = "symjac.torch"
    entry.__doc__ = summary + "\n" + _DOCS
    return entry


jacobian = _entry_point("jacobian", """The Jacobian d function / d wrt as a differentiable torch operator
    (symjac's layout: output shape + wrt shape, nested for tuples).""")
function = _entry_point("function", """The function itself as a torch operator whose backward is the generated
    vector-Jacobian product (uᵀJ with respect to every argument).""", takes_wrt=False)
function_and_jacobian = _entry_point("function_and_jacobian", """``(value, jacobian)`` in one kernel sharing
    subexpressions, both differentiable.""")
