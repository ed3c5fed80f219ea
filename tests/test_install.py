"""The kernel runtime built with the package (setup.py -> symjac/_runtime).

An install builds the runtime extension into the package and ships it in
the wheel; a Jacobian then builds in a fresh environment without compiling
the runtime (only the model's kernel library is compiled). An installed
runtime that does not load, or that was built from another runtime text,
is never used: the runtime is then built on demand into the cache, as
without an install.

The install test builds a wheel from a copy of this checkout with the
running interpreter's setuptools, Cython, Jinja2 and numpy (no build
isolation, no network) and installs it into a fresh venv that sees this
environment's packages for the dependencies; about 15-30 s on a quiet
machine.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import symjac
from symjac.build import builder, cache

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")

_RUN = textwrap.dedent(
    """
    import json, sys
    import numpy as np, symjac
    from symjac.build import builder, toolchain
    compiled = {"runtime": 0, "model": 0}
    compile_runtime, compile_extension = toolchain.compile_runtime, toolchain.compile_extension
    def count(kind, original):
        def counted(*args, **kwargs):
            compiled[kind] += 1
            return original(*args, **kwargs)
        return counted
    toolchain.compile_runtime = count("runtime", compile_runtime)
    toolchain.compile_extension = count("model", compile_extension)
    if sys.argv[1] == "stale":  # the package now renders another runtime text than the installed one's
        text = builder.runtime_source() + "\\n# changed since the install\\n"
        builder.runtime_source = lambda: text
    def rober(y, k):
        return np.array([-k[0]*y[0] + k[2]*y[1]*y[2], k[0]*y[0] - k[1]*y[1]**2 - k[2]*y[1]*y[2], k[1]*y[1]**2])
    jac = symjac.jacobian(rober, y=3, k=3, wrt="y", flags=("-O0",))
    J = jac(np.array([1.0, 2e-5, 0.1]), np.array([0.04, 3e7, 1e4]))
    print(json.dumps({"compiled": compiled, "symjac": symjac.__file__, "J": J.tolist(),
                      "runtime": type(jac._module.MODEL).__module__}))
    """
)


def _copy_checkout(destination: Path) -> Path:
    """What an sdist holds: the build files, the package and its templates."""
    destination.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.egg-info")
    for name in ("symjac", "templates"):
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    return destination


def test_an_install_builds_the_runtime_and_a_first_jacobian_does_not_compile_it(tmp_path):
    checkout = _copy_checkout(tmp_path / "checkout")
    wheels = tmp_path / "wheels"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(wheels), str(checkout)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = wheels.glob("symjac-*.whl")
    assert f"symjac/_runtime{SUFFIX}" in zipfile.ZipFile(wheel).namelist()  # the wheel ships the extension
    assert not wheel.name.endswith("-none-any.whl")  # and is tagged for this platform

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(purelib),
                           str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # numpy, sympy, jinja2, Cython from this environment (a .pth line: the
    # directory's own .pth files, such as an editable symjac's, are not run)
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "SYMJAC_DEBUG")}
    runs = {}
    for mode in ("installed", "stale"):
        env["SYMJAC_CACHE_DIR"] = str(tmp_path / f"cache-{mode}")
        done = subprocess.run([str(python), "-c", _RUN, mode], env=env, capture_output=True, text=True,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        runs[mode] = json.loads(done.stdout)
    installed, stale = runs["installed"], runs["stale"]
    assert Path(installed["symjac"]).is_relative_to(purelib)
    assert installed["compiled"] == {"runtime": 0, "model": 1}
    assert installed["runtime"] == "symjac._runtime"
    # a runtime built from another text is refused: built on demand, as before the install
    assert stale["compiled"] == {"runtime": 1, "model": 1}
    assert stale["runtime"].startswith("_symjac_runtime_")
    assert installed["J"] == stale["J"]


def test_an_unloadable_installed_runtime_falls_back_to_the_on_demand_build(tmp_path, monkeypatch):
    fake = tmp_path / f"_runtime{SUFFIX}"
    fake.write_bytes(b"not a shared object")
    monkeypatch.setattr(builder, "installed_runtime_path", lambda: fake)
    monkeypatch.setattr(builder, "_loaded", {})
    root = cache.private_dir(cache.cache_dir())  # the run's cache: its on-demand runtime is reused
    assert builder.installed_runtime() is None
    runtime = builder.kernel_runtime(root)
    assert runtime.__name__.startswith("_symjac_runtime_") and Path(runtime.__file__).is_relative_to(root)


def test_a_missing_installed_runtime_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setattr(builder, "installed_runtime_path", lambda: tmp_path / f"_runtime{SUFFIX}")
    monkeypatch.setattr(builder, "_loaded", {})
    assert builder.installed_runtime() is None
    assert symjac  # the package itself imports without it
