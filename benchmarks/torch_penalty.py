"""One training step of a Jacobian penalty: symjac.torch against four torch ways.

The step: the Jacobian J = d decoder / d h for every sample of a batch, the
penalty ||J - I||²_F summed over the batch, and the backward pass to h and
every weight. decoder(h) = W2 tanh(W1 h + b1) + b2, batch 256, float64, one
thread (torch.set_num_threads(1); symjac kernels follow torch's thread count).

    .venv/bin/python benchmarks/torch_penalty.py            # 8->16->8 and 32->64->32
    .venv/bin/python benchmarks/torch_penalty.py --sizes 8 32 64x1024 --repeats 10   # k or k x hidden
    .venv/bin/python benchmarks/torch_penalty.py --sizes 32 --form scalar            # force a form

Every method's gradients are checked against the closed form before timing.
The symjac build time (forward Jacobian kernel and its backward kernel) is
as measured in this process: trace, differentiate, simplify, render, and the
C compilation unless the build cache already holds the modules. Times are
the best of --repeats steps, the methods taking turns.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

import symjac.torch


def decoder(h, W1, b1, W2, b2):
    return W2 @ np.tanh(W1 @ h + b1) + b2


def decoder_t(h, W1, b1, W2, b2):
    return torch.tanh(h @ W1.T + b1) @ W2.T + b2


# Each method: (h, W1, b1, W2, b2) -> J of shape (N, k, k), differentiable.

def closed_form(h, W1, b1, W2, b2):
    s = 1 - torch.tanh(h @ W1.T + b1) ** 2          # (N, m)
    return torch.einsum("ia,na,aj->nij", W2, s, W1)


def func_vmap_jacrev(h, W1, b1, W2, b2):
    return torch.func.vmap(torch.func.jacrev(decoder_t), in_dims=(0, None, None, None, None))(h, W1, b1, W2, b2)


def functional_jacobian(h, W1, b1, W2, b2):
    # samples are independent: d(sum over the batch)/dh gives every sample's Jacobian
    J = torch.autograd.functional.jacobian(lambda x: decoder_t(x, W1, b1, W2, b2).sum(0), h,
                                           create_graph=True, vectorize=True)   # (k, N, k)
    return J.permute(1, 0, 2)


def row_loop(h, W1, b1, W2, b2):
    if not h.requires_grad:
        h = h.requires_grad_()
    y = decoder_t(h, W1, b1, W2, b2)
    rows = [torch.autograd.grad(y[:, i].sum(), h, create_graph=True)[0] for i in range(y.shape[1])]
    return torch.stack(rows, 1)


def make_symjac(k, m, native=False, form="auto"):
    start = time.perf_counter()
    jac = symjac.torch.jacobian(decoder, h=k, W1=(m, k), b1=m, W2=(k, m), b2=k, wrt="h", native=native, form=form,
                                verbose=False)
    return jac, time.perf_counter() - start


def parameters(k, m, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(n, k), (m, k), (m,), (k, m), (k,)]
    scale = [1.0, k ** -0.5, 0.1, m ** -0.5, 0.1]
    return [(torch.randn(s, generator=g, dtype=torch.float64) * c).requires_grad_() for s, c in zip(shapes, scale)]


def step(method, params, eye):
    for p in params:
        p.grad = None
    J = method(*params)
    loss = ((J - eye) ** 2).sum()
    loss.backward()
    return loss


def grads(method, params, eye):
    step(method, params, eye)
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]  # b2: no gradient


def time_steps(methods, params, eye, repeats):
    """Best time per step of each method, in ms. The methods take turns, one step
    each, so that load from other processes falls on all of them alike."""
    for method in methods.values():
        for _ in range(3):
            step(method, params, eye)
    best = dict.fromkeys(methods, float("inf"))
    for _ in range(repeats):
        for name, method in methods.items():
            start = time.perf_counter()
            step(method, params, eye)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds * 1e3 for name, seconds in best.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["8", "32"],
                        help="decoders: k (k -> 2k -> k) or KxH (k -> H -> k)")
    parser.add_argument("--form", choices=("auto", "scalar", "array"), default="auto", help="symjac's form")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--native", action="store_true", help="compile symjac's kernels with -march=native")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    cache = os.environ.get("SYMJAC_CACHE_DIR", "~/.cache/symjac")
    print(f"batch {options.batch}, float64, {torch.get_num_threads()} thread, torch {torch.__version__}, "
          f"symjac cache {cache}, load average {os.getloadavg()[0]:.1f}")
    methods = {
        "closed form (einsum)": closed_form,
        "torch.func vmap(jacrev)": func_vmap_jacrev,
        "autograd.functional.jacobian": functional_jacobian,
        "autograd.grad row loop": row_loop,
    }
    rows = []
    for size in options.sizes:
        k, _, hidden = size.partition("x")
        k = int(k)
        m = int(hidden) if hidden else 2 * k
        jac, build = make_symjac(k, m, options.native, options.form)
        params = parameters(k, m, options.batch)
        eye = torch.eye(k, dtype=torch.float64)
        reference = grads(closed_form, params, eye)
        everything = {"symjac.torch.jacobian": jac, **methods}
        for name, method in everything.items():
            got = grads(method, params, eye)
            error = max(((g - r).abs().max() / r.abs().max().clamp_min(1e-300)).item() for g, r in zip(got, reference))
            if error > 1e-10:
                raise SystemExit(f"{name}: gradients differ from the closed form by {error:.1e} (relative)")
        results = time_steps(everything, params, eye, options.repeats)
        rows.append((k, m, build, results))
        print(f"\ndecoder {k} -> {m} -> {k}: symjac build {build:.1f} s, {jac.form} form")
        for name, ms in results.items():
            ratio = ms / results["symjac.torch.jacobian"]
            print(f"  {name:30s} {ms:8.2f} ms/step (best)  {ratio:6.2f}x symjac's time")
    print("\n| decoder | symjac.torch | closed form (einsum) | torch.func vmap(jacrev) | "
          "autograd.functional.jacobian | row loop | symjac build |")
    print("|---|---|---|---|---|---|---|")
    for k, m, build, results in rows:
        cells = " | ".join(f"{ms:.2f} ms" for ms in results.values())
        print(f"| {k} -> {m} -> {k} | {cells} | {build:.1f} s |")


if __name__ == "__main__":
    main()
