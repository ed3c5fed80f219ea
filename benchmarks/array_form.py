"""The array form against its peers, one thread, every peer measured in this run.

    python benchmarks/array_form.py            # the full sizes of issue 19
    python benchmarks/array_form.py --quick    # smaller sizes, a smoke run

Prints, for each case, the median time of each contender and its ratio to the
reference (the hand-written closed form). Run it on an otherwise idle
machine; the load average is printed with the figures.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from symjac.derive.array_calculus import derive  # noqa: E402
from symjac.emit.array_printing import load_module, print_module  # noqa: E402
from symjac.front.array_trace import trace_array  # noqa: E402

torch.set_num_threads(1)


def median_time(call, repeat: int, number: int = 1) -> float:
    call()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def build(function, names, shapes, what, target, wrt=(0,)):
    program = trace_array(function, names, shapes)
    return load_module(print_module(derive(program, wrt, False, what), target, what), target).kernel


def decoder(h, W1, b1, W2, b2):
    return W2 @ np.tanh(W1 @ h + b1) + b2


def report(title, rows, reference):
    print(f"\n{title}")
    base = dict(rows)[reference]
    for name, seconds in rows:
        print(f"  {name:<38} {seconds * 1e3:10.2f} ms   {seconds / base:6.2f}x")


def decoder_jacobian(k, hidden, n, batch, repeat):
    rng = np.random.default_rng(0)
    shapes = ((k,), (hidden, k), (hidden,), (n, hidden), (n,))
    args = [rng.normal(size=(batch, k)), rng.normal(size=(hidden, k)) / np.sqrt(k), rng.normal(size=hidden),
            rng.normal(size=(n, hidden)) / np.sqrt(hidden), rng.normal(size=n)]
    args32 = [a.astype(np.float32) for a in args]
    targs = [torch.tensor(a) for a in args32]
    names = ("h", "W1", "b1", "W2", "b2")
    jac_np = build(decoder, names, shapes, "jacobian", "numpy")
    jac_torch = build(decoder, names, shapes, "jacobian", "torch")

    def hand_numpy(h, W1, b1, W2, b2):
        t = np.tanh(h @ W1.T + b1)
        return np.einsum("oi,bij->boj", W2, (1 - t * t)[:, :, None] * W1, optimize=True)

    def hand_torch(h, W1, b1, W2, b2):
        t = torch.tanh(h @ W1.T + b1)
        return torch.einsum("oi,bi,ij->boj", W2, 1 - t * t, W1)

    def torch_decoder(h, W1, b1, W2, b2):
        return W2 @ torch.tanh(W1 @ h + b1) + b2

    jacfwd = torch.func.vmap(torch.func.jacfwd(torch_decoder), in_dims=(0, None, None, None, None))
    expected = hand_numpy(*args32)
    np.testing.assert_allclose(jac_np(*args32), expected, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(jac_torch(*targs).numpy(), expected, rtol=2e-3, atol=2e-4)
    rows = [
        ("hand-written einsum (numpy)", median_time(lambda: hand_numpy(*args32), repeat)),
        ("hand-written einsum (torch)", median_time(lambda: hand_torch(*targs), repeat)),
        ("torch.func vmap(jacfwd)", median_time(lambda: jacfwd(*targs), repeat)),
        ("symjac array form, numpy", median_time(lambda: jac_np(*args32), repeat)),
        ("symjac array form, torch", median_time(lambda: jac_torch(*targs), repeat)),
    ]
    report(f"J of the {k} -> {hidden} -> {n} decoder, float32, batch {batch}", rows, "hand-written einsum (numpy)")
    fastest_peer = min(rows[0][1], rows[1][1], rows[2][1])
    best = min(rows[3][1], rows[4][1])
    print(f"  symjac (best target) / fastest peer: {best / fastest_peer:.2f}x")


def build_times(k, n, widths, repeat):
    names = ("h", "W1", "b1", "W2", "b2")
    rows = []
    for hidden in widths:
        shapes = ((k,), (hidden, k), (hidden,), (n, hidden), (n,))
        for target in ("numpy", "torch"):
            seconds = median_time(lambda: build(decoder, names, shapes, "jacobian", target), repeat)
            rows.append((f"hidden {hidden}, {target} target", seconds))
    print(f"\nbuild time (trace + derive + print + load) of the {k} -> hidden -> {n} decoder Jacobian")
    for name, seconds in rows:
        print(f"  {name:<38} {seconds * 1e3:10.2f} ms")
    for target in ("numpy", "torch"):
        times = [s for name, s in rows if name.endswith(f"{target} target")]
        print(f"  {target}: widest / narrowest = {times[-1] / times[0]:.2f}x")


def logistic(w, X, y):
    return np.sum(np.logaddexp(0, -y * (X @ w)))


def logistic_hessian(n, d, repeat):
    rng = np.random.default_rng(1)
    X, y, w = rng.normal(size=(n, d)), np.sign(rng.normal(size=n)), rng.normal(size=d) * 0.1
    hess_np = build(logistic, ("w", "X", "y"), ((d,), (n, d), (n,)), "hessian", "numpy")
    hess_torch = build(logistic, ("w", "X", "y"), ((d,), (n, d), (n,)), "hessian", "torch")
    tw, tX, ty = (torch.tensor(a) for a in (w, X, y))

    def hand(w, X, y):
        s = 1.0 / (1.0 + np.exp(-y * (X @ w)))
        return X.T @ ((s * (1 - s))[:, None] * X)

    def torch_logistic(w):
        return torch.nn.functional.softplus(-ty * (tX @ w)).sum()

    np.testing.assert_allclose(hess_np(w, X, y), hand(w, X, y), rtol=1e-9, atol=1e-9)
    rows = [
        ("hand-written X.T @ (s(1-s)[:, None] * X)", median_time(lambda: hand(w, X, y), repeat)),
        ("torch.func.hessian", median_time(lambda: torch.func.hessian(torch_logistic)(tw), max(1, repeat // 4))),
        ("symjac array form, numpy", median_time(lambda: hess_np(w, X, y), repeat)),
        ("symjac array form, torch", median_time(lambda: hess_torch(tw, tX, ty), repeat)),
    ]
    report(f"logistic-regression Hessian, {n} samples x {d} features, float64", rows,
           "hand-written X.T @ (s(1-s)[:, None] * X)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    options = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; torch {torch.__version__}, numpy {np.__version__}, 1 thread")
    if options.quick:
        decoder_jacobian(8, 64, 32, 16, 5)
        build_times(8, 32, (64, 512), 3)
        logistic_hessian(200, 50, 5)
    else:
        decoder_jacobian(32, 1024, 784, 64, 15)
        build_times(32, 784, (64, 4096), 7)
        logistic_hessian(2000, 500, 15)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
