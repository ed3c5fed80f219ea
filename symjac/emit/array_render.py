"""Render the array form: a derived ArrayProgram -> a :class:`Source`.

The module text is the array printer's (``array_printing.py``: one
``kernel(*args)`` over whole arrays, numpy or torch), followed for the numpy
target by the section every symjac module has (``templates/_array_calls.py.j2``):
the metadata of ``templates/_metadata.py.j2`` and ``KERNELS`` in the call
convention of ``run/calling.py``, so that the runtime, the Dask adapter and
standalone modules treat an array-form module like any other.

Array-form results are dense: a Jacobian's packed values are every entry of
each block (its "sparsity" is all True), a Hessian's the lower triangle of
each output's matrix over the concatenated ``wrt``, as in the scalar form.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..derive.derivatives import DERIVATIVES
from ..derive.kinds import KINDS
from ..front.array_program import ArrayProgram
from .array_printing import print_module
from .source import Source, calling_source, environment

__all__ = ["block_coordinates", "render_array"]


def block_coordinates(structure, levels: int) -> dict[int, tuple[int, ...]]:
    """Output number -> its position in ``structure`` nested ``levels`` deep
    (positions of missing levels are 0): ``J[i][j]`` -> ``(i, j)``."""
    found = {}

    def walk(node, position):
        if isinstance(node, tuple) and len(position) < levels:
            for number, inner in enumerate(node):
                walk(inner, position + (number,))
        else:
            found[node] = position + (0,) * (levels - len(position))

    walk(structure, ())
    return found


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _positions(traced: ArrayProgram, derived: ArrayProgram, wrt_levels: int, wrt_is_tuple: bool):
    """Per output buffer: (output number, wrt numbers ...) of the block it holds."""
    out_level = int(traced.output_is_tuple)
    coordinates = block_coordinates(derived.structure, out_level + (wrt_levels if wrt_is_tuple else 0))
    return [((position[0] if out_level else 0),) + (position[out_level:] if wrt_is_tuple else (0,) * wrt_levels)
            for position in (coordinates[b] for b in range(len(derived.outputs)))]


def _packed_layouts(traced: ArrayProgram, derived: ArrayProgram, kind: str, wrt, wrt_is_tuple):
    """(layout, nonzeros, full shapes, sparse shapes, gather) of the packed
    variant of ``kind``; ``gather`` (Hessians) places each block in its
    output's full matrix: (output, row offset, column offset, rows, columns)."""
    sizes = [traced.inputs[j].size for j in wrt]
    shapes = tuple(var.shape for var in derived.outputs)
    if kind == "jacobian":
        positions = _positions(traced, derived, 1, wrt_is_tuple)
        nonzeros = tuple(_Indices(_size(shape), f"range({_size(shape)})") for shape in shapes)
        sparse = tuple((_size(shape) // sizes[position[1]], sizes[position[1]])
                       for shape, position in zip(shapes, positions))
        layout = (tuple((len(indices),) for indices in nonzeros), derived.structure)
        return layout, nonzeros, shapes, sparse, None
    total = sum(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    nonzeros = tuple(_Indices(output.size * total * (total + 1) // 2,
                              f"(numpy.arange({output.size})[:, None] * {total * total} + numpy.ravel_multi_index("
                              f"numpy.tril_indices({total}), ({total}, {total}))).ravel().tolist()")
                     for output in traced.outputs)
    full_shapes = tuple(output.shape + (total, total) for output in traced.outputs)
    sparse = tuple((output.size * total, total) for output in traced.outputs)
    structure = tuple(range(len(traced.outputs))) if traced.output_is_tuple else 0
    layout = (tuple((len(indices),) for indices in nonzeros), structure)
    gather = tuple((output, int(offsets[a]), int(offsets[c]), sizes[a], sizes[c])
                   for output, a, c in _positions(traced, derived, 2, wrt_is_tuple))
    return layout, nonzeros, full_shapes, sparse, gather


@dataclass(frozen=True)
class _Indices:
    """A packed buffer's flat indices: how many, and the Python expression
    that makes them when the module is imported (every entry of a dense
    result: printed as numbers they would grow the source with n^2)."""

    count: int
    expression: str

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class _Driver:
    """What templates/_interface.py.j2 needs of a public function."""

    kind: str
    docs: str
    packed: bool
    kernel_kind: str
    single: bool

    @property
    def layout(self) -> str:
        return "packed" if self.packed else "dense"


@dataclass(frozen=True)
class _Header:
    alias: str | None


@dataclass(frozen=True)
class _Interface:
    runtime: str
    drivers: tuple[_Driver, ...]
    header: _Header


def render_array(traced: ArrayProgram, derived: ArrayProgram, what: str, wrt: tuple[int, ...],
                 wrt_is_tuple: bool, target: str, standalone: bool = False) -> Source:
    """The Source of ``derived`` (derivative ``what`` of ``traced``) for ``target``;
    ``standalone`` (numpy) adds the call convention and public functions of
    ``templates/_interface.py.j2``, so that the module needs only numpy."""
    description = DERIVATIVES[what]
    text = print_module(derived, target, description.title)
    kernel = description.kernels[0]
    kinds = (kernel,)
    if target == "numpy":
        layouts = {kernel: (tuple(var.shape for var in derived.outputs), derived.structure)}
        nonzeros, full_shapes, sparse_shapes, gather = {}, {}, {}, None
        if KINDS[kernel].packed_docs:
            packed = KINDS[kernel].packed_name
            layouts[packed], nonzeros[packed], full_shapes[packed], sparse_shapes[packed], gather = \
                _packed_layouts(traced, derived, kernel, wrt, wrt_is_tuple)
            kinds += (packed,)
        metadata = environment().get_template("_metadata.py.j2").render(
            version=__version__, content_hash="", function=traced.name,
            names=tuple(var.name for var in derived.inputs), shapes=tuple(var.shape for var in derived.inputs),
            wrt=tuple(wrt), output_shapes=tuple(var.shape for var in traced.outputs),
            output_is_tuple=traced.output_is_tuple, wrt_is_tuple=wrt_is_tuple, parallel_min_points=1,
            caller_zeroes={}, layouts=layouts, full_shapes=full_shapes, sparse_shapes=sparse_shapes,
            nonzeros={kind: [f"*{indices.expression}," for indices in tables] for kind, tables in nonzeros.items()},
        ).rstrip("\n")
        text += environment().get_template("_array_calls.py.j2").render(
            metadata=metadata, kernel=kernel, packed=kinds[1] if len(kinds) > 1 else None, gather=gather,
            structure=derived.structure)
        if standalone:
            text += environment().get_template("_interface.py.j2").render(module=_Interface(
                runtime=calling_source(),
                drivers=tuple(_Driver(kind, KINDS[kernel].packed_docs if kind != kernel else KINDS[kernel].docs,
                                      kind != kernel, kernel, derived.structure == 0) for kind in kinds),
                header=_Header(what if kernel == "function" and what != "function" else None)))
    content_hash = hashlib.sha256(text.encode()).hexdigest()
    return Source(f"{target}-array", text, content_hash, kinds)
