"""A small MLP on a fixed synthetic data set with everything the probe estimates computed by brute
force: per-example gradients (vmap over every example), the exact Hessian of the full-data loss
(torch.func.jacrev of grad), hence G, Sigma, B_simple, B_crit and E[dL] of sign updates. Shared by the
probe's estimator tests and examples tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap


def mlp_data(n: int = 2000, seed: int = 0, width: int = 12):
    """(model, loss_fn, inputs, targets): 6 inputs -> ``width`` tanh -> 3 classes, float64,
    d = 6 width + width + 3 width + 3 (123 at width 12); labels from a noisy teacher."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g, dtype=torch.float64)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64)
    Y = torch.multinomial(torch.softmax(X @ W, 1), 1, generator=g).squeeze(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, width), nn.Tanh(), nn.Linear(width, 3)).double()
    return model, F.cross_entropy, X, Y


class Exact:
    """Brute-force quantities of ``mlp_data`` at its weights (float64)."""

    def __init__(self, model, loss_fn, X, Y) -> None:
        params = {k: v.detach() for k, v in model.named_parameters()}
        names, shapes = list(params), [p.shape for p in params.values()]
        sizes = [p.numel() for p in params.values()]
        theta = torch.cat([p.reshape(-1) for p in params.values()])

        def loss(th, x, y):
            tree = {k: t.reshape(s) for k, t, s in zip(names, th.split(sizes), shapes, strict=True)}
            return loss_fn(functional_call(model, tree, (x,)), y)

        self.per = vmap(grad(loss), in_dims=(None, 0, 0))(theta, X[:, None], Y[:, None])  # (n, d)
        self.n = X.shape[0]
        self.G = self.per.mean(0)
        c = self.per - self.G
        self.Sigma = c.T @ c / (self.n - 1)
        self.H = jacrev(grad(loss))(theta, X, Y)  # reverse over reverse (jacfwd warns in torch 2.13)
        self.b_simple = float(torch.trace(self.Sigma) / (self.G @ self.G))
        self.b_crit = float(torch.trace(self.H @ self.Sigma) / (self.G @ self.H @ self.G))

    def sign_moments(self, B: int, draws: int, seed: int = 0) -> tuple[float, float, float, float]:
        """E[G'V], E[V'HV] of V = sign(mean of B distinct examples' gradients), by a large sample of
        minibatches (exact per-example gradients, exact H): (a, se_a, b, se_b)."""
        gen = torch.Generator().manual_seed(seed)
        a, b = [], []
        for s in range(0, draws, 4096):
            k = min(4096, draws - s)
            idx = torch.rand(k, self.n, generator=gen).argsort(1)[:, :B]
            V = torch.sign(self.per[idx].mean(1))
            a.append(V @ self.G)
            b.append(((V @ self.H) * V).sum(1))
        a, b = torch.cat(a), torch.cat(b)
        r = math.sqrt(draws)
        return float(a.mean()), float(a.std() / r), float(b.mean()), float(b.std() / r)
