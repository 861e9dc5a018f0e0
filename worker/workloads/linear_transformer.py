"""In-context linear regression with a linear transformer (Section 4.3 / Appendix B.4).

The benchmark of Ahn et al. 2024 ("Linear attention is (maybe) all you need"): each
sequence is its own regression task y = w^T x with w ~ N(0, I_d), presented as

    Z = [[x_1, ..., x_n, x_{n+1}],
         [y_1, ..., y_n, 0      ]]          shape (d+1, n+1), d=5, n=20,

and the model must predict y_{n+1}. Heavy-tailed covariates (x uniform on the sphere
scaled by sqrt(Gamma(0.1, 10))) make the stochastic gradient noise heavy-tailed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from worker.config import TrialConfig
from worker.workloads.base import Workload
from worker.workloads.quadratic import derive_seed

D = 5  # covariate dimension
N = 20  # context length (labelled examples per sequence)
LAYERS = 3
INIT_STD = 0.01  # "sufficiently small" (Ahn et al.); the exact value hardly matters
EVAL_SEQUENCES = 2048
HESSIAN_SEQUENCES = 256


def sample_sequences(
    n_sequences: int, covariates: Literal["light", "heavy"], rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """``(Z, target)``: inputs of shape (B, d+1, n+1) and the hidden labels y_{n+1}, (B,).

    numpy's generator is used because torch's Gamma sampler cannot take a generator;
    drawing in float64 and casting keeps the heavy tail intact.
    """
    x = rng.standard_normal((n_sequences, N + 1, D))
    if covariates == "heavy":
        radius = np.sqrt(rng.gamma(shape=0.1, scale=10.0, size=(n_sequences, N + 1, 1)))
        x = x / np.linalg.norm(x, axis=-1, keepdims=True) * radius
    w = rng.standard_normal((n_sequences, D))
    y = np.einsum("bnd,bd->bn", x, w)
    z = np.concatenate([x, y[..., None]], axis=-1).transpose(0, 2, 1).copy()
    z[:, D, N] = 0.0
    return torch.from_numpy(z).float(), torch.from_numpy(y[:, N]).float()


class LinearAttention(nn.Module):
    """One residual linear-attention layer, Z <- Z + 1/n P~ Z M Z^T Q~ Z, where M = diag(I_n, 0)
    keeps the query token (the last column) from acting as a key or value.

    As in the code of Ahn et al., the trained P and Q are d x d and embedded as
    P~ = [[P, 0], [0, 1]] and Q~ = [[Q, 0], [0, 0]]: attention scores come from the
    covariates alone and the label row is carried through. The label row then gets
    y_query += 1/n sum_i y_i x_i^T Q x_query, a preconditioned gradient step on w, so the
    model is not at a saddle at a small initialisation (full (d+1)x(d+1) matrices are).
    """

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.P = nn.Parameter(INIT_STD * torch.randn(D, D, generator=generator, device="cpu"))
        self.Q = nn.Parameter(INIT_STD * torch.randn(D, D, generator=generator, device="cpu"))

    def forward(self, z: Tensor) -> Tensor:
        carry = torch.zeros(D + 1, D + 1, dtype=z.dtype, device=z.device)
        carry[D, D] = 1.0
        p = F.pad(self.P, (0, 1, 0, 1)) + carry
        q = F.pad(self.Q, (0, 1, 0, 1))
        keys = z[..., :N]  # Z M without its zero column
        # P~ (Z M Z^T) Q~ Z: the (d+1)x(d+1) Gram matrix first, which is cheaper than the
        # (n+1)x(n+1) attention matrix and mathematically the same product.
        return z + p @ (keys @ keys.transpose(-1, -2)) @ q @ z / N


class Layer(nn.Module):
    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.attention = LinearAttention(generator)


class LinearTransformer(nn.Module):
    """Parameters are named ``layers.{l}.attention.{P,Q}`` so that ``magma.components``
    classifies all of them as attention."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(derive_seed(seed, "linear-transformer-init"))
        self.layers = nn.ModuleList(Layer(generator) for _ in range(LAYERS))

    def forward(self, z: Tensor) -> Tensor:
        """The prediction of y_{n+1}: minus the bottom-right entry of the last Z.

        The sign follows Ahn et al. (and von Oswald et al.): a layer implementing one step
        of gradient descent writes -eta * w_hat^T x_{n+1} into that entry.
        """
        for layer in self.layers:
            z = layer.attention(z)
        return -z[:, D, N]


class LinearTransformerWorkload(Workload):
    """Light- or heavy-tailed covariates (``config.covariates``); mean squared error.

    A micro-batch is ``batch_size // grad_accum`` fresh sequences, drawn from a generator
    seeded by ``(seed, step, micro_step)``. Evaluation uses a fixed held-out set of
    ``EVAL_SEQUENCES`` from the same distribution, seeded by ``(seed, "eval")``.
    """

    def __init__(self, config: TrialConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self._model = LinearTransformer(config.seed).to(device)
        self.sequences_per_batch = config.batch_size // config.grad_accum
        rng = np.random.default_rng(derive_seed(config.seed, "eval"))
        z, y = sample_sequences(EVAL_SEQUENCES, config.covariates, rng)
        self.eval_set = (z.to(device), y.to(device))

    @property
    def model(self) -> LinearTransformer:
        return self._model

    def masked_params(self) -> dict[str, list[nn.Parameter]]:
        """Every P and Q, labelled "attention" (the model has nothing else)."""
        return {"attention": list(self._model.parameters())}

    def batch(self, step: int, micro_step: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng(derive_seed(self.config.seed, step, micro_step))
        z, y = sample_sequences(self.sequences_per_batch, self.config.covariates, rng)
        return z.to(self.device), y.to(self.device)

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        z, y = batch
        return (self._model(z) - y).square().mean()

    def evaluate(self) -> dict[str, float]:
        with torch.no_grad():
            metrics = {"val_loss": float(self.loss(self.eval_set))}
        if self.config.condition_number:
            metrics.update(self.hessian_spectrum())
        return metrics

    def hessian_spectrum(self) -> dict[str, float]:
        """Robust condition number (Jiang et al. 2023): lambda_max / |lambda_median| of the
        Hessian of the loss on the first ``HESSIAN_SEQUENCES`` eval sequences, w.r.t. all
        parameters flattened into one vector, computed and diagonalised in float64.

        Parameters the loss does not depend on at all (exactly zero Hessian row, e.g. the
        last layer's P, whose output rows are never read) are left out: their zero
        eigenvalues carry no curvature and would otherwise pin the median to 0. The other
        eigenvalues are taken as they are, negative curvature included; only the median is
        taken in absolute value, so the ratio stays positive when it is negative.
        """
        names = [name for name, _ in self._model.named_parameters()]
        params = [p.detach().double() for p in self._model.parameters()]
        shapes = [p.shape for p in params]
        sizes = [p.numel() for p in params]
        z, y = (t[:HESSIAN_SEQUENCES].double() for t in self.eval_set)

        def loss_of(flat: Tensor) -> Tensor:
            chunks = flat.split(sizes)
            values = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
            return (functional_call(self._model, values, (z,)) - y).square().mean()

        # reverse-over-reverse: forward-mode AD (torch.func.hessian) warns from torch internals
        full = jacrev(jacrev(loss_of))(torch.cat([p.reshape(-1) for p in params]))
        live = full.abs().sum(dim=1) > 0
        eigenvalues = torch.linalg.eigvalsh(full[live][:, live])
        top = float(eigenvalues[-1])
        median = float(eigenvalues.median())
        return {
            "condition_number": top / abs(median) if median != 0 else float("inf"),
            "hessian_max_eigenvalue": top,
            "hessian_median_eigenvalue": median,
        }
