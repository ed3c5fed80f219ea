"""The rendered-source cache (sources.py): warm starts keyed on the traced program.

The key must stay exact: anything that can change the generated code is in
it (a changed body, closure constant, version or threshold misses), and a hit
must skip differentiate, simplify and render while the object can still be
differentiated again.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symjac
from symjac.build import builder as build
from symjac.emit import simplify
from symjac.build import sources
from symjac.api import resolve_wrt

ROOT = Path(__file__).resolve().parent.parent


def _key(function, what="jacobian", kinds=("jacobian",), backend="cython", wrt=None, **shapes):
    traced = symjac.trace(function, **shapes)
    indices, is_tuple = resolve_wrt(traced, wrt)
    return sources.source_key(traced, indices, is_tuple, what, kinds, backend)


def body_a(x):
    return np.array([x[0] * x[1], np.sin(x[0])])


def body_a_again(x):  # another function, the same program: the same key
    return np.array([x[0] * x[1], np.sin(x[0])])


def body_b(x):
    return np.array([x[0] * x[1], np.cos(x[0])])


def with_constant(c):
    def f(x):
        return np.array([c * x[0] * x[1], np.sin(x[0])])
    return f


def test_the_key_is_of_the_traced_program_not_the_function():
    assert _key(body_a, x=2) == _key(body_a, x=2)
    # the function's name is printed into the module, so it is part of the key
    renamed = _key(body_a_again, x=2)
    body_a_again.__name__ = "body_a"
    try:
        assert _key(body_a_again, x=2) == _key(body_a, x=2)
    finally:
        body_a_again.__name__ = "body_a_again"
    assert renamed != _key(body_a, x=2)


def test_a_changed_body_misses():
    assert _key(body_a, x=2) != _key(body_b, x=2)


def test_a_changed_closure_constant_misses():
    assert _key(with_constant(2.0), x=2) != _key(with_constant(2.5), x=2)
    assert _key(with_constant(2.0), x=2) == _key(with_constant(2.0), x=2)


def test_a_changed_numpy_or_sympy_version_misses(monkeypatch):
    before = _key(body_a, x=2)
    monkeypatch.setattr(np, "__version__", "0.0.1")
    assert _key(body_a, x=2) != before
    monkeypatch.undo()
    assert _key(body_a, x=2) == before
    import sympy
    monkeypatch.setattr(sympy, "__version__", "0.0.1")
    assert _key(body_a, x=2) != before


def test_request_and_thresholds_are_in_the_key(monkeypatch):
    base = _key(body_a, x=2)
    others = {
        _key(body_a, x=3),
        _key(body_a, backend="numpy", x=2),
        _key(body_a, kinds=("jacobian", "function"), x=2),
        _key(body_a, what="hessian", kinds=("hessian",), x=2),
        _key(body_a, wrt=("x",), x=2),
    }
    assert base not in others and len(others) == 5
    monkeypatch.setattr(simplify, "CHUNK_STATEMENTS", 3)
    assert _key(body_a, x=2) != base


def test_shared_subexpressions_hash_in_linear_time():
    def deep(x):
        y = x[0]
        for _ in range(200):  # as a tree this is 2**200 nodes; as a DAG, 400
            y = y * y + y
        return np.array([y])

    traced = symjac.trace(deep, x=1)
    assert len(sources.source_key(traced, (0,), False, "jacobian", ("jacobian",), "cython")) == 64


def test_a_hit_returns_the_stored_source_and_damage_is_a_miss(tmp_path):
    root = symjac.build.cache.private_dir(tmp_path / "cache")
    generated = symjac.api.generate(body_a, (), {"x": 2}, wrt=None, backend="cython")
    key = _key(body_a, x=2)
    assert sources.cached_source(root, key) is None
    sources.store_source(root, key, generated.source)
    assert sources.cached_source(root, key) == generated.source
    (entry,) = [path for path in root.iterdir() if path.name.startswith("source-")]
    data = entry / sources.FILE
    damaged = json.loads(data.read_text())
    damaged["text"] = damaged["text"].replace("x[0]", "x[1]")
    replacement = entry / "replacement"
    replacement.write_text(json.dumps(damaged))
    os.replace(replacement, data)
    assert sources.cached_source(root, key) is None  # the hash no longer matches: a miss, never used
    sources.store_source(root, key, generated.source)  # rewritten
    assert sources.cached_source(root, key) == generated.source
    (entry / "manifest.json").write_text("{not json")
    assert sources.cached_source(root, key) is None


def test_an_entry_others_can_write_is_refused(tmp_path):
    root = symjac.build.cache.private_dir(tmp_path / "cache")
    key = _key(body_a, x=2)
    sources.store_source(root, key, symjac.api.generate(body_a, (), {"x": 2}, wrt=None, backend="cython").source)
    (entry,) = [path for path in root.iterdir() if path.name.startswith("source-")]
    (entry / sources.FILE).chmod(0o666)
    with pytest.raises(symjac.CacheError, match="other users may write"):
        sources.cached_source(root, key)


def test_closures_with_different_constants_never_share_a_module(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_loaded", {})
    x = np.array([1.5, 2.0])
    for c in (2.0, 3.0, 2.0):
        jac = symjac.jacobian(with_constant(c), x=2, flags=("-O0",))
        np.testing.assert_allclose(jac(x), [[c * x[1], c * x[0]], [np.cos(x[0]), 0.0]], rtol=1e-15)


_WARM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, symjac
    from symjac import api
    from symjac.build import toolchain
    generate = api._generate_traced
    if sys.argv[1] == "warm":
        def refuse(*args, **kwargs):
            raise AssertionError("a warm start ran a stage after tracing, or a build step")
        api._generate_traced = toolchain.cythonize = toolchain.compile_extension = refuse
    def lorenz(u, p):
        return np.array([p[0]*(u[1]-u[0]), u[0]*(p[1]-u[2]) - u[1], u[0]*u[1] - p[2]*u[2]])
    jac = symjac.jacobian(lorenz, u=3, p=3, flags=("-O0",))
    api._generate_traced = generate  # differentiating again (numpy backend) runs the stages
    u, p = np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8.0 / 3.0])
    second = symjac.jacobian(jac, wrt="p", backend="numpy")  # the derivative, computed lazily
    print(json.dumps({"J": jac(u, p).tolist(), "dJdp": second(u, p).tolist(), "file": jac._module.__file__}))
    """
)


def test_a_warm_start_in_a_new_process_skips_every_stage_after_tracing(tmp_path):
    env = {**os.environ, "SYMJAC_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("SYMJAC_DEBUG", None)
    runs = []
    for mode in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-c", _WARM_SCRIPT, mode], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1]
    np.testing.assert_allclose(runs[1]["J"], [[-10.0, 10.0, 0.0], [25.0, -1.0, -1.0], [2.0, 1.0, -8.0 / 3.0]],
                               rtol=1e-15)
    dJdp = np.array(runs[1]["dJdp"])
    assert dJdp.shape == (3, 3, 3) and dJdp[0, 0, 0] == -1.0 and dJdp[1, 0, 1] == 1.0
