"""A Jacobian penalty in a training loss: the PyTorch forum's question, answered.

An autoencoder x -> h = encoder(x) -> decoder(h) is trained with

    loss = mean ||decoder(h) - x||² + λ mean_n ||J_n - I||²_F,   J_n = d decoder / d h at sample n,

so the Jacobian of every sample must itself be differentiated with respect
to h (and through it the encoder) and to the decoder's weights.
``symjac.torch.jacobian`` computes J for the whole batch: from k = 4 in the
array form (``W2 (1 - tanh²(W1 h + b1)) W1`` printed as torch operations,
so torch's autograd gives the backward), at the smallest widths in the
scalar form (one generated kernel, its backward another generated kernel).

    python -m symjac.examples.jacobian_penalty              # 300 Adam steps, 32 -> 512 -> 32
    python -m symjac.examples.jacobian_penalty --small      # 8 -> 16 -> 8
    python -m symjac.examples.jacobian_penalty --steps 50 --k 4 --hidden 8 --form scalar

It prints the loss curve, checks at every ``--check-every`` steps that the
gradients agree with torch.autograd.functional.jacobian(create_graph=True)
to 1e-10 (relative, float64), and times one training step with symjac next
to the torch ways of computing J (closed-form einsum, torch.func
vmap(jacrev), autograd.functional.jacobian(create_graph, vectorize)).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import symjac.torch


def decoder(h, W1, b1, W2, b2):
    """The decoder as plain numpy: what symjac traces."""
    return W2 @ np.tanh(W1 @ h + b1) + b2


def decoder_t(h, W1, b1, W2, b2):
    """The same decoder in torch, for batches h (N, k)."""
    return torch.tanh(h @ W1.T + b1) @ W2.T + b2


# Ways to get every sample's J = d decoder / d h, (N, k, k), differentiably.

def jacobian_closed_form(h, W1, b1, W2, b2):
    s = 1 - torch.tanh(h @ W1.T + b1) ** 2
    return torch.einsum("ia,na,aj->nij", W2, s, W1)


def jacobian_vmap_jacrev(h, W1, b1, W2, b2):
    return torch.func.vmap(torch.func.jacrev(decoder_t), in_dims=(0, None, None, None, None))(h, W1, b1, W2, b2)


def jacobian_functional(h, W1, b1, W2, b2, vectorize=True):
    # samples are independent, so d(sum over the batch)/dh holds every sample's Jacobian
    J = torch.autograd.functional.jacobian(lambda x: decoder_t(x, W1, b1, W2, b2).sum(0), h,
                                           create_graph=True, vectorize=vectorize)
    return J.permute(1, 0, 2)


class Autoencoder(torch.nn.Module):
    def __init__(self, k, hidden, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def parameter(*shape, scale):
            return torch.nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64) * scale)

        self.encoder = torch.nn.Sequential(torch.nn.Linear(k, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, k))
        self.encoder.double()
        self.W1, self.b1 = parameter(hidden, k, scale=k ** -0.5), parameter(hidden, scale=0.1)
        self.W2, self.b2 = parameter(k, hidden, scale=hidden ** -0.5), parameter(k, scale=0.1)

    def decoder_weights(self):
        return self.W1, self.b1, self.W2, self.b2


def loss_of(model, x, jacobian, lam):
    h = model.encoder(x)
    weights = model.decoder_weights()
    reconstruction = ((decoder_t(h, *weights) - x) ** 2).sum(-1).mean()
    J = jacobian(h, *weights)
    eye = torch.eye(J.shape[-1], dtype=J.dtype)
    penalty = ((J - eye) ** 2).sum((-2, -1)).mean()
    return reconstruction + lam * penalty, reconstruction, penalty


def gradients(model, x, jacobian, lam):
    model.zero_grad()
    loss = loss_of(model, x, jacobian, lam)[0]
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def data(n, k, seed=1):
    """Points on a curved 2-D sheet embedded in R^k."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1
    basis = torch.randn(4, k, generator=g, dtype=torch.float64)
    features = torch.stack([t[:, 0], t[:, 1], torch.sin(2 * t[:, 0]) * t[:, 1], t[:, 0] ** 2], 1)
    return features @ basis


def time_steps(model, x, ways, lam, steps):
    """Best time of one training step per way, in ms; the ways take turns so that
    load from other processes falls on all of them alike."""
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(steps + 1):
        for name, way in ways.items():
            start = time.perf_counter()
            gradients(model, x, way, lam)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds * 1e3 for name, seconds in best.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train an autoencoder with a Jacobian penalty using symjac.torch.")
    parser.add_argument("--k", type=int, default=32, help="data and code dimension (decoder k -> hidden -> k)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--small", action="store_true", help="the decoder 8 -> 16 -> 8 (overrides --k, --hidden)")
    parser.add_argument("--form", choices=("auto", "array", "scalar"), default="auto",
                        help="symjac's form (default: auto, which picks by size)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lam", type=float, default=0.1, help="weight λ of the Jacobian penalty")
    parser.add_argument("--check-every", type=int, default=100, help="compare gradients with torch every N steps")
    parser.add_argument("--timing-steps", type=int, default=20)
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    k, hidden = (8, 16) if options.small else (options.k, options.hidden)

    start = time.perf_counter()
    jac = symjac.torch.jacobian(decoder, h=k, W1=(hidden, k), b1=hidden, W2=(k, hidden), b2=k, wrt="h",
                                form=options.form)
    print(f"symjac: decoder {k} -> {hidden} -> {k}, Jacobian ready in {time.perf_counter() - start:.1f} s, "
          f"{jac.form} form ({jac!r})")

    def reference(*args):
        return jacobian_functional(*args, vectorize=False)   # autograd.functional.jacobian(create_graph=True)

    model = Autoencoder(k, hidden)
    x = data(options.batch, k)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    print(f"training {options.steps} Adam steps, batch {options.batch}, λ = {options.lam}, float64, one thread")
    print("  step      loss  reconstruction  ||J - I||²")
    for step in range(1, options.steps + 1):
        optimizer.zero_grad()
        loss, reconstruction, penalty = loss_of(model, x, jac, options.lam)
        loss.backward()
        if step % options.check_every == 0 or step == 1:
            ours = [p.grad.clone() for p in model.parameters()]
            theirs = gradients(model, x, reference, options.lam)
            error = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, theirs))
            if not error <= 1e-10:
                raise SystemExit(f"step {step}: gradients differ from autograd.functional.jacobian by {error:.1e}")
            for p, g in zip(model.parameters(), ours):
                p.grad = g
            print(f"  step {step:5d} {loss.item():9.5f} {reconstruction.item():15.5f} {penalty.item():11.5f}"
                  f"   gradients agree with autograd.functional.jacobian(create_graph=True): {error:.1e}")
        elif step % max(1, options.steps // 10) == 0 or step == options.steps:
            print(f"  step {step:5d} {loss.item():9.5f} {reconstruction.item():15.5f} {penalty.item():11.5f}")
        optimizer.step()

    print(f"\ntime per training step (forward, loss, backward; best of {options.timing_steps}):")
    ways = {
        "symjac.torch.jacobian": jac,
        "closed form (einsum)": jacobian_closed_form,
        "torch.func vmap(jacrev)": jacobian_vmap_jacrev,
        "autograd.functional.jacobian": jacobian_functional,
    }
    timed = time_steps(model, x, ways, options.lam, options.timing_steps)
    for name, ms in timed.items():
        print(f"  {name:30s} {ms:8.2f} ms/step  ({ms / timed['symjac.torch.jacobian']:.2f}x symjac's time)")


if __name__ == "__main__":
    main()
