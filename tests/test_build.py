"""The build cache: hits across processes, damaged entries rebuilt, privacy."""

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
from symjac.build import cache
from symjac.build import toolchain

ROOT = Path(__file__).resolve().parent.parent


def lorenz(u, p):
    return np.array([p[0] * (u[1] - u[0]), u[0] * (p[1] - u[2]) - u[1], u[0] * u[1] - p[2] * u[2]])


def _entries(cache: Path):
    """The cache's model entries: not the shared kernel runtime (runtime-...)
    nor the rendered sources of traced programs (source-...) nor warm-start keys (warm-...)
    nor compiled templates (templates-...)."""
    return sorted(path for path in cache.iterdir() if not path.name.startswith((".", "runtime-", "source-", "warm-", "templates-")))


def test_second_process_loads_from_cache_without_compiling(tmp_path):
    """A cache hit is asserted by what did not run, not by how long it took: in the
    second process Cython and the C compiler are replaced by functions that fail."""
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, symjac
        from symjac.build import toolchain
        calls = []
        if sys.argv[1] == "forbid":
            def refuse(*args, **kwargs):
                raise AssertionError("cache hit expected, but a build step ran")
            toolchain.cythonize = toolchain.compile_extension = toolchain.compile_module = refuse
        else:
            original = toolchain.compile_extension
            toolchain.compile_extension = lambda *a: (calls.append(a), original(*a))
        def lorenz(u, p):
            return np.array([p[0]*(u[1]-u[0]), u[0]*(p[1]-u[2]) - u[1], u[0]*u[1] - p[2]*u[2]])
        jac = symjac.jacobian(lorenz, u=3, p=3, backend="cython")
        J = jac(np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8.0 / 3.0]))
        print(json.dumps({"compiled": len(calls), "J": J.tolist(), "file": jac._module.__file__}))
        """
    )
    env = {**os.environ, "SYMJAC_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("SYMJAC_DEBUG", None)
    runs = []
    for mode in ("count", "forbid"):
        done = subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    assert runs[0]["compiled"] == 1
    assert runs[1]["compiled"] == 0
    assert runs[1]["file"] == runs[0]["file"]  # the very extension the first process built
    assert runs[0]["J"] == runs[1]["J"]
    expected = [[-10.0, 10.0, 0.0], [28.0 - 3.0, -1.0, -1.0], [2.0, 1.0, -8.0 / 3.0]]
    np.testing.assert_allclose(runs[1]["J"], expected, rtol=1e-15)
    assert len(_entries(cache)) == 1
    assert (cache.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_damaged_entry_is_rebuilt_not_loaded(tmp_path, monkeypatch, damage):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    derivative, _ = symjac.api.build_derivative(lorenz, (3, 3), {}, None)
    programs = (symjac.emit.simplify.simplify(derivative),)
    source = symjac.emit.render.render(derivative, programs, "cython")
    build._loaded.clear()  # forget modules loaded by other tests: use this cache
    build.load(source)
    (entry,) = _entries(cache)
    manifest = json.loads((entry / "manifest.json").read_text())
    extension = entry / manifest["file"]
    # Damage by writing a new file over the name: the loaded extension stays
    # mapped in this process, and rewriting it in place would crash it.
    replacement = entry / "replacement"
    if damage == "truncate":
        replacement.write_bytes(extension.read_bytes()[:1000])
        os.replace(replacement, extension)
    elif damage == "flip":
        data = bytearray(extension.read_bytes())
        data[len(data) // 2] ^= 0xFF
        replacement.write_bytes(bytes(data))
        os.replace(replacement, extension)
    elif damage == "manifest":
        (entry / "manifest.json").write_text("{not json")
    else:
        extension.unlink()
    assert symjac.build.cache.verified_extension(entry) is None
    build._loaded.clear()  # forget the in-process module so the cache is consulted
    compiled = []
    original = toolchain.compile_extension
    monkeypatch.setattr(toolchain, "compile_extension", lambda *a: (compiled.append(a), original(*a)))
    module = build.load(source)
    assert len(compiled) == 1
    assert symjac.build.cache.verified_extension(entry) is not None
    assert "jacobian" in module.KERNELS


def test_cache_writable_by_others_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(cache))
    with pytest.raises(symjac.CacheError, match="writable by other users"):
        symjac.jacobian(lorenz, 3, 3, backend="cython")


def test_key_changes_with_flags_and_source(tmp_path):
    derivative, _ = symjac.api.build_derivative(lorenz, (3, 3), {}, None)
    source = symjac.emit.render.render(derivative, (symjac.emit.simplify.simplify(derivative),), "cython")
    keys = {
        build.cache_key(source, build.BuildOptions()),
        build.cache_key(source, build.BuildOptions(flags=("-O2",))),
        build.cache_key(symjac.emit.render.render(derivative, (symjac.emit.simplify.simplify(derivative),), "numpy"), build.BuildOptions()),
    }
    assert len(keys) == 3


def test_numpy_backend_needs_no_compiler(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    jac = symjac.jacobian(lorenz, 3, 3, backend="numpy")
    J = jac(np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8.0 / 3.0]))
    assert J[2, 2] == -8.0 / 3.0


def test_default_backend_falls_back_to_numpy_with_warning(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.warns(RuntimeWarning, match="numpy backend"):
        jac = symjac.jacobian(lorenz, 3, 3)
    assert jac.backend == "numpy"


def test_default_backend_is_cython_with_a_compiler():
    """With a working compiler and no backend named, the Jacobian is really
    compiled: a verified kernel library in the build cache, run by the kernel
    runtime's checked kernels, giving the exact numbers."""
    assert build.compiler_works(), "the test machine must have a C compiler (this test must not pass vacuously)"
    jac = symjac.jacobian(lorenz, 3, 3)
    assert jac.backend == "cython"
    library = Path(jac._module.__file__)
    assert library.parent.parent.resolve() == cache.cache_dir().resolve()
    assert cache.verified_extension(library.parent) == library
    assert type(jac._kernels["jacobian"]).__name__ == "Kernel"
    u, p = np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8.0 / 3.0])
    expected = [[-10.0, 10.0, 0.0], [28.0 - 3.0, -1.0, -1.0], [2.0, 1.0, -8.0 / 3.0]]
    np.testing.assert_array_equal(jac(u, p), expected)
    np.testing.assert_array_equal(jac(np.tile(u, (3, 1)), p), [expected] * 3)  # a batch: the kernel's loop


def test_missing_compiler_is_a_build_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(symjac.BuildError, match="could not be started") as info:
        symjac.jacobian(lorenz, 3, 3, backend="cython", flags=("-O1",))
    assert "/nonexistent/cc" in " ".join(info.value.command)
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".trash")]


def test_cache_info_and_clear_commands(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "SYMJAC_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    script = "import numpy as np, symjac; symjac.jacobian(lambda x: np.sin(x) * x[0], 2, backend='cython', flags=('-O0',))"
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    command = [sys.executable, "-m", "symjac", "cache"]
    info = subprocess.run([*command, "info"], env=env, capture_output=True, text=True, check=True).stdout
    assert f"cache directory: {cache}" in info and "entries: 1" in info
    cleared = subprocess.run([*command, "clear"], env=env, capture_output=True, text=True, check=True).stdout
    assert "removed 1 entries" in cleared
    assert "entries: 0" in subprocess.run([*command, "info"], env=env, capture_output=True, text=True).stdout
    assert cache.is_dir() and not list(cache.iterdir())


def test_cache_info_counts_leftovers_and_clear_keeps_running_builds(tmp_path, monkeypatch):
    """A killed build leaves a .build-* folder: info counts it, clear removes
    it; a build still running (its .lock held, here by this process) stays."""
    import fcntl

    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    dead, live = root / ".build-dead", root / ".build-live"
    for path in (dead, live):
        path.mkdir()
        (path / "kernel.o").write_bytes(b"x" * 300_000)
    (dead / cache.LOCK).touch()  # its process died: nobody holds the lock
    handle = os.open(live / cache.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX)
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(root))
    env = {**os.environ, "PYTHONPATH": str(Path(symjac.__file__).parent.parent)}
    try:
        info = subprocess.run([sys.executable, "-m", "symjac", "cache", "info"], capture_output=True, text=True,
                              env=env)
        assert "leftovers: 1 folder(s) of interrupted builds, 0.3 MiB" in info.stdout, info.stdout
        assert "1 build(s) running now" in info.stdout and "size: 0.6 MiB" in info.stdout
        cleared = subprocess.run([sys.executable, "-m", "symjac", "cache", "clear"], capture_output=True,
                                 text=True, env=env)
        assert "1 leftover folder(s)" in cleared.stdout and "kept 1 build(s) still running" in cleared.stdout
        assert not dead.exists() and live.is_dir()
    finally:
        os.close(handle)
    assert [path for path, _, abandoned in cache.cache_leftovers(root)] == [live]
    assert cache.cache_leftovers(root)[0][2] is True  # the lock is free now: abandoned
    # an old folder without a lock is abandoned, a fresh one is not
    (live / cache.LOCK).unlink()
    assert cache.cache_leftovers(root)[0][2] is False
    os.utime(live, (1, 1))
    os.utime(live / "kernel.o", (1, 1))
    assert cache.cache_leftovers(root)[0][2] is True


def test_kernels_build_without_probing_the_toolchain_and_fall_back_where_it_lacks_a_feature(tmp_path, monkeypatch):
    """A kernel build tries -fopenmp and vector libm without probing for them
    (each probe is a compile and a link in every new process); where the
    toolchain lacks one, the failed build asks the probes and builds without
    it; a source that fails with every feature present is reported."""
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "VECTOR_MATH_LIKELY", True)
    for probe in (toolchain._openmp_works_with, toolchain._vector_math_works_with):
        probe.cache_clear()
    probes = []
    real_links, real_compile = toolchain._links, toolchain.compile_kernels
    monkeypatch.setattr(toolchain, "_links", lambda *args: probes.append(args[2]) or real_links(*args))
    u, p = np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8.0 / 3.0])
    expected = [[-10.0, 10.0, 0.0], [28.0 - 3.0, -1.0, -1.0], [2.0, 1.0, -8.0 / 3.0]]

    np.testing.assert_array_equal(symjac.jacobian(lorenz, 3, 3, backend="cython", flags=("-O1",))(u, p), expected)
    assert probes == []

    def without_libmvec(text, name, workdir, flags, parts=(), libraries=()):
        if "-lmvec" in libraries:
            raise symjac.BuildError("the linker failed: cannot find -lmvec")
        return real_compile(text, name, workdir, flags, parts, libraries)

    monkeypatch.setattr(toolchain, "compile_kernels", without_libmvec)
    monkeypatch.setattr(toolchain, "vector_math_works", lambda: False)
    jac = symjac.jacobian(lorenz, 3, 3, backend="cython", flags=("-O2",))  # a new key: built again
    np.testing.assert_array_equal(jac(u, p), expected)
    assert cache.verified_extension(Path(jac._module.__file__).parent) is not None

    def broken(*args, **kwargs):
        raise symjac.BuildError("the C compiler failed: the source itself")

    monkeypatch.setattr(toolchain, "compile_kernels", broken)
    monkeypatch.setattr(toolchain, "vector_math_works", lambda: True)
    monkeypatch.setattr(toolchain, "openmp_works", lambda: True)
    with pytest.raises(symjac.BuildError, match="the source itself"):
        symjac.jacobian(lorenz, 3, 3, backend="cython", flags=("-O0",))
