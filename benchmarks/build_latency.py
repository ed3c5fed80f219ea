"""Cold-build and cached-load latency of a small Jacobian, each in a new process.

    python benchmarks/build_latency.py [--repeat 3]

Prints, for Robertson's 3x3 Jacobian: the time of ``symjac.jacobian(...)``
with an empty cache (trace + differentiate + CSE + render + Cython + C
compiler), the same call in a new process with the cache warm (symbolic
stages + hash check + load), and the import time of symjac itself.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, time
start = time.perf_counter()
import numpy as np, symjac
from symjac import build, cache, toolchain
imported = time.perf_counter()
stages = {}
for name in ("cythonize", "compile_extension"):
    original = getattr(build, name)
    def timed(*args, _original=original, _name=name):
        t = time.perf_counter(); _original(*args); stages[_name] = time.perf_counter() - t
    setattr(build, name, timed)
from symjac.examples.rober import rober
t = time.perf_counter()
jac = symjac.jacobian(rober, y=3, k=3, wrt="y", backend="cython")
print(json.dumps({"import": imported - start, "jacobian": time.perf_counter() - t, **stages}))
"""


def run(cache: str) -> dict:
    env = {**os.environ, "SYMJAC_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    cold, warm = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as directory:
            cache = os.path.join(directory, "cache")
            cold.append(run(cache))
            warm.append(run(cache))
    median = lambda runs, key: statistics.median(r.get(key, 0.0) for r in runs)  # noqa: E731
    print(f"{'':28s}{'median s':>10s}")
    print(f"{'import symjac':28s}{median(cold, 'import'):10.3f}")
    print(f"{'cold jacobian()':28s}{median(cold, 'jacobian'):10.3f}")
    print(f"{'  of which Cython':28s}{median(cold, 'cythonize'):10.3f}")
    print(f"{'  of which C compiler':28s}{median(cold, 'compile_extension'):10.3f}")
    print(f"{'cached jacobian(), new proc':28s}{median(warm, 'jacobian'):10.3f}")


if __name__ == "__main__":
    main()
