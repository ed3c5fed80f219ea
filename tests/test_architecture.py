"""The seams: imports run one way through the stages, and every registry
entry has every piece it needs (a derivative, a kernel kind, a backend).

Adding a derivative, kernel kind or backend that misses a piece fails here,
loudly, before any user meets it.
"""

import ast
from pathlib import Path

import numpy as np
import pytest

import symjac
from symjac.build import builder
from symjac.cli import make_parser
from symjac.derive.derivatives import DERIVATIVES
from symjac.derive.kinds import KINDS, kernel_spec
from symjac.emit.backend import Backend
from symjac.derive.array_calculus import derive as derive_array
from symjac.emit.array_printing import load_module
from symjac.emit.array_render import render_array
from symjac.emit.backends import BACKENDS
from symjac.front.array_trace import trace_array
from symjac.emit.render import render
from symjac.emit.simplify import simplify
from symjac.emit.source import template_dir
from symjac.front.trace import trace
from symjac.run.runtime import RESULTS, Compiled

PACKAGE = Path(symjac.__file__).resolve().parent

# Each module's rank in the pipeline: a module may import only modules of a
# rank no higher than its own (the same stage, or an earlier one).
RANKS = {
    "errors": 0, "progress": 0,
    "front": 1, "derive": 2, "emit": 3, "build": 4, "options": 5, "run": 6, "api": 7,
    "adapters": 8, "codegen": 8, "torch": 9, "dask": 9, "cli": 9, "__main__": 10,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("symjac",) + tuple(part for part in parts if part != "__init__"))


def _rank(module: str) -> int:
    return RANKS[module.split(".")[1]]


def _imports(path: Path) -> set[str]:
    """Every symjac module ``path`` imports, at the top or inside a function."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("symjac"):
                continue
            for alias in node.names:  # `from . import x` imports the module x when there is one
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("symjac"))
    return {name for name in found if name != "symjac" and not name.startswith("symjac.examples")}


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


MODULES = sorted(path for path in PACKAGE.rglob("*.py")
                 if "examples" not in path.relative_to(PACKAGE).parts and path != PACKAGE / "__init__.py")


def test_every_module_has_a_rank():
    for path in MODULES:
        assert _module_name(path).split(".")[1] in RANKS, path


@pytest.mark.parametrize("path", MODULES, ids=lambda path: _module_name(path))
def test_no_stage_imports_a_later_one(path):
    module = _module_name(path)
    later = sorted(target for target in _imports(path) if _rank(target) > _rank(module))
    assert not later, f"{module} imports later stages: {later}"


def test_no_import_cycles():
    graph = {_module_name(path): {target for target in _imports(path) if _exists(target)} for path in MODULES}
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        if state.get(node) == "open":
            cycle = trail[trail.index(node):] + [node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            visit(target, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])


def test_the_rank_check_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself: a front module importing run is caught."""
    fake = PACKAGE / "front" / "trace.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "from ..run import runtime\n")
    assert any(_rank(target) > _rank("symjac.front.trace") for target in _imports(fake))


# --------------------------------------------------------------------------
# registries


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_each_derivative_has_every_piece(name):
    kind = DERIVATIVES[name]
    assert kind.name == name and kind.title and kind.summary and callable(kind.transform)
    assert set(kind.all_kernels) <= set(KINDS), "kernel kinds must be KINDS entries"
    assert issubclass(RESULTS[name], Compiled) and RESULTS[name].DERIVATIVE == name
    entry = getattr(symjac, name)
    assert callable(entry) and name in symjac.__all__ and entry.__name__ == name
    assert kind.title.lower() in entry.__doc__.lower()
    kind_help = next(action.help for action in make_parser()._subparsers._group_actions[0].choices["codegen"]._actions
                     if "--kind" in action.option_strings)
    assert name in kind_help


def test_every_result_class_has_a_description():
    assert set(RESULTS) == set(DERIVATIVES)


def _cubic(x, p):
    return np.array([x[0] ** 2 * p[0], np.sin(x[1]) * x[0]])


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kernel_kind_builds_a_spec(name):
    kind = KINDS[name]
    assert kind.docs
    derivative = DERIVATIVES["hessian" if name == "hessian" else "jacobian"].transform(trace(_cubic, 2, 1), (0,), False)
    spec = kernel_spec(derivative, name)
    assert spec.kind == name and spec.outputs
    assert (spec.packing is not None) == bool(kind.packed_docs), "a packed kind needs its packed docs, and back"


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_has_every_piece_and_computes(name):
    backend = BACKENDS[name]
    assert isinstance(backend, Backend) and backend.name == name
    for template in (backend.template, backend.library_template):
        assert template is None or (template_dir() / template).is_file(), template
    assert backend.suffix in (".py", ".pyx") and backend.form in ("scalar", "array")
    x, p = np.array([0.5, 1.5]), np.array([3.0])
    expected = [[2 * x[0] * p[0], 0.0], [np.sin(x[1]), x[0] * np.cos(x[1])]]
    if backend.form == "array":
        traced = trace_array(lambda x, p: np.stack([x[0] ** 2 * p[0], np.sin(x[1]) * x[0]]), ("x", "p"), ((2,), (1,)))
        derived = derive_array(traced, (0,), False, "jacobian")
        source = render_array(traced, derived, "jacobian", (0,), False, name.removesuffix("-array"))
        assert source.backend == name
        if name == "torch-array":
            import torch

            result = load_module(source.text, "torch").kernel(torch.tensor(x), torch.tensor(p)).numpy()
            np.testing.assert_allclose(result, expected, rtol=1e-14)
            return
    else:
        assert isinstance(backend.element("W", (1, 0)), str) and hasattr(backend.printer({}), "doprint")
        derivative = DERIVATIVES["jacobian"].transform(trace(_cubic, 2, 1), (0,), False)
        source = render(derivative, (simplify(derivative, "jacobian"),), name)
    module = builder.load(source)
    out = np.empty((1, 4))
    module.KERNELS["jacobian"]((x[None], p[None]), (out,), 1, 1)
    np.testing.assert_allclose(out.reshape(2, 2), expected, rtol=1e-14)
