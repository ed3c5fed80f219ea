"""
Training with a Jacobian penalty
================================

The autoencoder of ``symjac.examples.jacobian_penalty``, trained with

    loss = mean ||decoder(h) - x||^2 + lambda mean_n ||J_n - I||^2,

where J_n = d decoder / d h at sample n comes from ``symjac.torch.jacobian``:
one generated kernel for the batch, and one more for its backward. A small
run (decoder 4 -> 8 -> 4, batch 128, 150 Adam steps) to keep the build fast;
``python -m symjac.examples.jacobian_penalty`` runs the full one.
"""

import matplotlib.pyplot as plt
import torch

import symjac.torch
from symjac.examples.jacobian_penalty import Autoencoder, data, decoder, loss_of

k, hidden, lam, steps = 4, 8, 0.1, 150
torch.set_num_threads(1)
jac = symjac.torch.jacobian(decoder, h=k, W1=(hidden, k), b1=hidden, W2=(k, hidden), b2=k, wrt="h")
model = Autoencoder(k, hidden)
x = data(128, k)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
history = []
for step in range(steps):
    optimizer.zero_grad()
    loss, reconstruction, penalty = loss_of(model, x, jac, lam)
    loss.backward()
    optimizer.step()
    history.append((loss.item(), reconstruction.item(), penalty.item()))
print(f"loss {history[0][0]:.4f} -> {history[-1][0]:.4f} after {steps} steps")

fig, ax = plt.subplots(figsize=(7, 4))
for column, label in enumerate(["loss", "reconstruction", r"$\|J - I\|_F^2$ (mean)"]):
    ax.semilogy([row[column] for row in history], label=label)
ax.set_xlabel("Adam step")
ax.set_title(f"decoder {k} -> {hidden} -> {k}, batch 128, lambda = {lam}")
ax.legend()
fig.tight_layout()
plt.show()
