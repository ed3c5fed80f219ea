"""Memory soak: does RSS grow over many calls and many cached loads?

Run by hand (takes a minute or two; the first run compiles one Jacobian):

    PYTHONPATH=. python benchmarks/memory_soak.py [--calls 1000000] [--loads 1000]

Measures the resident set size (from /proc/self/statm, else
resource.getrusage's peak) before and after

  1. CALLS single-point calls of a compiled (Cython) Jacobian, through the
     compiled single-point fast path, plus CALLS / 10 small-batch calls with
     ``out=`` and CALLS / 10 ``values()`` calls (the general path);
  2. LOADS ``symjac.build.builder.load`` of the same cached module, with
     ``symjac.build.builder._loaded.clear()`` before each one so that every load takes
     the disk path (manifest, SHA-256 check, import by path);
  3. LOADS / 10 ``symjac.jacobian(...)`` of the same function in this process
     (trace, differentiate, simplify and render each time, then the
     in-process module cache).

and prints the growth of each phase. Growth that scales with the count is a
leak; a few MiB of one-off allocator noise is not. A small-count version of
this runs in the test suite (tests/test_trust.py,
test_repeated_calls_and_loads_do_not_leak).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

import symjac
from symjac.build import builder as build
from symjac.build import cache
from symjac.build import toolchain
from symjac.api import generate


def lorenz(u, p):
    return np.array([p[0] * (u[1] - u[0]), u[0] * (p[1] - u[2]) - u[1], u[0] * u[1] - p[2] * u[2]])


def rss_bytes() -> int:
    """Current resident set size; the peak where /proc is unavailable."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:+8.2f} MiB"


def phase(label: str, count: int, body) -> None:
    before = rss_bytes()
    start = time.perf_counter()
    body(count)
    elapsed = time.perf_counter() - start
    after = rss_bytes()
    per = (after - before) / max(count, 1)
    print(f"{label:<46} {count:>9,d}  {elapsed:7.2f} s  RSS {after / 2**20:8.1f} MiB  growth {mib(after - before)}"
          f"  ({per:+.1f} B per iteration)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="single-point calls (default 1,000,000)")
    parser.add_argument("--loads", type=int, default=1000, help="cached loads (default 1,000)")
    parser.add_argument("--cache-dir", help="SYMJAC_CACHE_DIR to use (default: a fresh temporary directory)")
    args = parser.parse_args(argv)
    os.environ["SYMJAC_CACHE_DIR"] = args.cache_dir or os.environ.get("SYMJAC_CACHE_DIR") or tempfile.mkdtemp(
        prefix="symjac-soak-")
    print(f"symjac {symjac.__version__}, numpy {np.__version__}, cache {os.environ['SYMJAC_CACHE_DIR']}")

    jac = symjac.jacobian(lorenz, u=3, p=3, backend="cython")
    source = generate(lorenz, (), {"u": 3, "p": 3}, wrt=None, backend="cython", kinds=("jacobian",)).source
    u, p = np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8.0 / 3.0])
    U = np.random.default_rng(0).normal(size=(8, 3))
    out = np.empty((8, 3, 3))
    expected = jac(u, p).copy()

    def point_calls(count):
        for _ in range(count):
            jac(u, p)

    def batch_calls(count):
        for _ in range(count):
            jac(U, p, out=out)

    def values_calls(count):
        for _ in range(count):
            jac.values(u, p)

    compiled = []
    original = toolchain.compile_extension
    toolchain.compile_extension = lambda *a: (compiled.append(a), original(*a))

    def disk_loads(count):
        for _ in range(count):
            build._loaded.clear()
            module = build.load(source)
            assert module.KERNELS

    def jacobian_calls(count):
        for _ in range(count):
            again = symjac.jacobian(lorenz, u=3, p=3, backend="cython")
            assert np.array_equal(again(u, p), expected)

    # warm up every path once so that one-off allocations are not counted
    point_calls(1000), batch_calls(100), values_calls(100), disk_loads(3), jacobian_calls(2)
    start = rss_bytes()
    print(f"RSS after warm-up: {start / 2**20:.1f} MiB")
    phase("single-point calls (compiled fast path)", args.calls, point_calls)
    phase("batch calls with out= (general path)", args.calls // 10, batch_calls)
    phase("values() calls", args.calls // 10, values_calls)
    phase("build.load, _loaded cleared (disk path)", args.loads, disk_loads)
    phase("symjac.jacobian of the same function", max(args.loads // 10, 1), jacobian_calls)
    print(f"total growth since warm-up: {mib(rss_bytes() - start)}; compiles during the soak: {len(compiled)}")
    return 1 if compiled else 0


if __name__ == "__main__":
    sys.exit(main())
