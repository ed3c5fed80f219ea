"""`symjac codegen`: golden sources, standalone modules, command-line errors.

The golden copies in generated/ are refreshed on purpose with

    python -m symjac codegen symjac/examples/models.py --backend cython --out generated/cython --no-build --quiet
    python -m symjac codegen symjac/examples/models.py --backend numpy --out generated/numpy --no-build --quiet
"""

import difflib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from oracles import complex_step_jacobian
from symjac.codegen import build_in_place, write_module
from symjac.examples import models
from symjac.examples.mlp import N_HIDDEN, N_IN, N_OUT, random_weights
from symjac.examples.rober import K_DEFAULT
from symjac.front.spec import ATTRIBUTE

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"
SUFFIX = {"cython": ".pyx", "numpy": ".py"}
REFRESH = "python -m symjac codegen symjac/examples/models.py --backend {b} --out generated/{b} --no-build --quiet"


def _regenerate(name, backend, directory):
    function = {**models.DECLARED, **models.DECLARED_DERIVATIVES}[name]
    declared = getattr(function, ATTRIBUTE)
    path, _ = write_module(function, declared.shapes, declared.named_shapes, wrt=declared.wrt,
                           backend=backend, what=declared.kind, name=name, out_dir=directory, build=False)
    return path


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("name", sorted(models.DECLARED) + sorted(models.DECLARED_DERIVATIVES))
def test_golden_source_is_reproduced_byte_for_byte(name, backend, tmp_path):
    fresh = _regenerate(name, backend, tmp_path).read_text()
    golden_path = GENERATED / backend / f"{name}{SUFFIX[backend]}"
    golden = golden_path.read_text()
    if fresh != golden:
        diff = "".join(difflib.unified_diff(golden.splitlines(True), fresh.splitlines(True),
                                            str(golden_path), "regenerated", n=2))
        pytest.fail(f"{golden_path} differs from what symjac generates now; if intended, refresh with\n"
                    f"  {REFRESH.format(b=backend)}\n{diff[:6000]}")


# ---------------------------------------------------------------------------
# standalone modules: import without sympy/symjac, check against complex step


def _points(name, rng):
    """(arguments at a batch of 3 points, index of the differentiated argument)."""
    if name == "rober":
        return [rng.uniform(0.1, 1.0, (3, 3)), K_DEFAULT], 0
    if name == "lorenz":
        return [rng.normal(size=(3, 3)), np.array([10.0, 28.0, 8.0 / 3.0])], 0
    if name == "vanderpol":
        return [rng.normal(size=(3, 2)), np.float64(3.0)], 0
    if name == "brusselator":
        return [rng.uniform(0.5, 3.0, (3, 2 * models.BRUSSELATOR_POINTS)), np.array([1.0, 3.0, 0.02])], 0
    if name == "mlp":
        return [rng.normal(size=(3, N_IN)), *random_weights(N_IN, N_HIDDEN, N_OUT, seed=1)], 0
    if name == "mlp_constant":
        return [rng.normal(size=(3, N_IN))], 0
    raise KeyError(name)


STANDALONE_SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys
    import numpy as np
    for blocked in ("sympy", "symjac"):
        sys.modules[blocked] = None  # importing either now raises ImportError
    sys.path.insert(0, sys.argv[1])
    request = json.loads(sys.stdin.read())
    results = {}
    for name, args in request.items():
        module = importlib.import_module(name)
        args = [np.asarray(a) for a in args]
        f, J = module.function_and_jacobian(*args)
        results[name] = {
            "jacobian": module.jacobian(*args).tolist(),
            "function": module.function(*args).tolist(),
            "fused": [f.tolist(), J.tolist()],
            "sparsity": module.sparsity().tolist(),
            "names": list(module.ARGUMENT_NAMES),
            "imported": sorted(m for m in ("sympy", "symjac", "Cython") if sys.modules.get(m) is not None),
        }
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def built_modules(tmp_path_factory):
    """The golden sources of both backends, copied out and (Cython) built."""
    directories = {}
    for backend in ("cython", "numpy"):
        directory = tmp_path_factory.mktemp(backend)
        for source in (GENERATED / backend).glob(f"*{SUFFIX[backend]}"):
            shutil.copy(source, directory / source.name)
        directories[backend] = directory
    pyx_files = sorted(directories["cython"].glob("*.pyx"))
    # -O1 builds faster; without -ffast-math the numbers are the same as -O3.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda pyx: build_in_place(pyx, pyx.stem, ("-O1",)), pyx_files))
    return directories


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_generated_modules_work_without_sympy_or_symjac(built_modules, backend):
    rng = np.random.default_rng(7)
    points = {name: _points(name, rng) for name in models.DECLARED}
    request = {name: [np.asarray(a).tolist() for a in args] for name, (args, _) in points.items()}
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", STANDALONE_SCRIPT, str(built_modules[backend])],
                         input=json.dumps(request), capture_output=True, text=True, env=env, cwd=built_modules[backend])
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    for name, (args, wrt) in points.items():
        model = models.DECLARED[name]
        got = results[name]
        assert got["imported"] == [], got["imported"]
        at_point = [[args[0][i], *args[1:]] for i in range(3)]  # only the first argument is batched
        expected = np.array([complex_step_jacobian(model, point, wrt) for point in at_point])
        values = np.array([model(*point) for point in at_point])
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got["jacobian"], expected, rtol=1e-11, atol=1e-12 * scale, err_msg=name)
        np.testing.assert_allclose(got["function"], values, rtol=1e-13, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(got["fused"][0], values, rtol=1e-13, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(got["fused"][1], got["jacobian"], rtol=1e-13, atol=1e-14 * scale, err_msg=name)
        assert np.all(np.asarray(got["sparsity"]) | (expected[0] == 0)), name  # pattern covers every non-zero


# ---------------------------------------------------------------------------
# the command line


def symjac_command(*args, env=None, cwd=None):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "symjac", *args], capture_output=True, text=True,
                          env=environment, cwd=cwd or ROOT)


def test_help_and_version():
    assert "codegen" in symjac_command("--help").stdout
    assert "--arg NAME=SHAPE" in symjac_command("codegen", "--help").stdout
    version = symjac_command("--version")
    assert version.returncode == 0 and version.stdout.startswith("symjac ")


def test_codegen_of_a_module_function_then_use_from_another_script(tmp_path):
    done = symjac_command("codegen", "symjac.examples.lorenz:lorenz", "--arg", "u=3", "--arg", "p=3",
                          "--backend", "numpy", "--name", "lorenz_jac", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for stage in ("traced", "differentiated", "simplified", "rendered"):
        assert stage in done.stderr
    script = tmp_path / "use.py"
    script.write_text("import numpy as np, lorenz_jac\nprint(lorenz_jac.jacobian(np.array([1.0, 2, 3]), np.array([10.0, 28, 2]))[2].tolist())\n")
    used = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert used.stdout.strip() == "[2.0, 1.0, -2.0]"


def test_codegen_builds_cython_in_place_quietly(tmp_path):
    model = tmp_path / "model.py"
    model.write_text("import numpy as np\n\ndef spring(x, c):\n    return -c * np.sinh(x)\n")
    done = symjac_command("codegen", "model.py:spring", "--arg", "x=2", "--arg", "c=()", "--out", "out", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    used = subprocess.run([sys.executable, "-c", "import numpy as np, spring; print(spring.jacobian(np.zeros(2), 3.0).tolist())"],
                          capture_output=True, text=True, cwd=tmp_path / "out")
    assert used.stdout.strip() == "[[-3.0, -0.0], [-0.0, -3.0]]" or used.stdout.strip() == "[[-3.0, 0.0], [0.0, -3.0]]"


def test_spec_decorated_file_generates_every_declared_function(tmp_path):
    model = tmp_path / "models.py"
    model.write_text(textwrap.dedent("""
        import numpy as np, symjac

        @symjac.spec(x=2, wrt="x")
        def first(x):
            return x * x

        @symjac.spec((2, 2), name="second_module")
        def second(m):
            return m.T @ m

        def helper(x):
            return x
    """))
    done = symjac_command("codegen", str(model), "--backend", "numpy", "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["first.py", "second_module.py"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing_file.py:f", "--arg", "x=3"], "does not exist"),
        (["symjac.examples.lorenz:nothing", "--arg", "u=3"], "'nothing' is not a function"),
        (["no_such_package_xyz:f"], "cannot import"),
        (["symjac.examples.lorenz:lorenz", "--arg", "u=three", "--arg", "p=3"], "bad shape 'three'"),
        (["symjac.examples.lorenz:lorenz", "--arg", "u=3", "--arg", "p=3", "--wrt", "q"], "names no argument"),
        (["symjac.examples.lorenz:lorenz", "--arg", "u=3"], "no shape given for argument(s) p"),
        (["symjac.examples.lorenz:lorenz", "--arg", "u=3", "--arg", "p=3", "--name", "x; import os"], "module name"),
        (["symjac.examples.lorenz:lorenz"], "give the shapes"),
    ],
)
def test_command_errors_are_one_line(args, message, tmp_path):
    done = symjac_command("codegen", *args, "--backend", "numpy", "--out", str(tmp_path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("symjac: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert done.stderr.rstrip().endswith(errors[0])  # progress lines may precede the error, nothing follows


def test_bad_argument_name_and_tracing_error(tmp_path):
    model = tmp_path / "bad.py"
    model.write_text("import math\n\ndef _hidden(_x):\n    return _x\n\ndef branchy(x):\n    return x if x[0] > 0 else -x\n")
    hidden = symjac_command("codegen", f"{model}:_hidden", "--arg", "_x=2", "--name", "ok", "--out", str(tmp_path))
    assert hidden.returncode == 1 and "argument name '_x' is not allowed" in hidden.stderr
    branch = symjac_command("codegen", f"{model}:branchy", "--arg", "x=2", "--out", str(tmp_path))
    assert branch.returncode == 1 and "np.where" in branch.stderr and "Traceback" not in branch.stderr


def test_compiler_failure_points_to_the_log(tmp_path):
    done = symjac_command("codegen", "symjac.examples.lorenz:lorenz", "--arg", "u=3", "--arg", "p=3",
                          "--out", str(tmp_path), "--quiet", env={"CC": "false"})
    assert done.returncode == 1
    assert "compiler log:" in done.stderr and "Traceback" not in done.stderr
    log = tmp_path / "lorenz.build.log"
    assert log.is_file() and "false" in log.read_text()
    assert not list(tmp_path.glob("lorenz*.so"))  # nothing half-built that would import
