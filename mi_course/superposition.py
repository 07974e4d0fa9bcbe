"""Toy models of superposition (Elhage et al. 2022): ``n`` sparse features squeezed into
``m < n`` dimensions by ``h = W x``, read back by ``x' = ReLU(W^T h + b)``.

Several *instances* train at once, one per feature probability (1 - sparsity), all with
the same importance per feature. Shapes: ``W`` ``[instances, m, n]``, ``b``
``[instances, n]``, data ``x`` ``[batch, instances, n]``. ``train_toy(...)`` takes a few
seconds on one CPU thread.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class ToyConfig:
    """The paper's first experiment: 5 features, 2 dimensions, importance ``decay ** i``,
    feature probabilities from 1 (dense) down to ``min_probability`` (very sparse)."""

    n_features: int = 5
    d_hidden: int = 2
    n_instances: int = 8
    decay: float = 0.9  # importance of feature i is decay ** i
    min_probability: float = 0.02  # the sparsest instance's feature probability
    steps: int = 800
    batch_size: int = 256
    lr: float = 2e-2
    seed: int = 0

    def importance(self) -> torch.Tensor:
        """``[n]``: ``decay ** i``."""
        return self.decay ** torch.arange(self.n_features, dtype=torch.float32)

    def probability(self) -> torch.Tensor:
        """``[instances]``: from 1 down to ``min_probability``, evenly spaced in log."""
        return self.min_probability ** torch.linspace(0, 1, self.n_instances)


def toy_batch(batch: int, probability: torch.Tensor, n_features: int, generator: torch.Generator) -> torch.Tensor:
    """``[batch, instances, n]``: each feature is present with ``probability[instance]``,
    then uniform in [0, 1]; absent features are 0."""
    shape = (batch, len(probability), n_features)
    values = torch.rand(shape, generator=generator)
    present = torch.rand(shape, generator=generator) < probability[None, :, None]
    return values * present


def toy_forward(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``ReLU(W^T W x + b)``: ``W`` ``[inst, m, n]``, ``b`` ``[inst, n]``, ``x`` ``[batch, inst, n]``
    -> ``[batch, inst, n]``."""
    hidden = torch.einsum("imn,bin->bim", W, x)
    return torch.relu(torch.einsum("imn,bim->bin", W, hidden) + b)


def importance_loss(x: torch.Tensor, x_hat: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """The paper's loss per instance: ``sum_i I_i (x_i - x'_i)^2`` averaged over the batch.
    ``x``, ``x_hat`` ``[batch, inst, n]``, ``importance`` ``[n]`` -> ``[inst]``."""
    return (importance * (x - x_hat) ** 2).sum(-1).mean(0)


def train_toy(config: ToyConfig | None = None) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Train all instances (Adam, constant lr, fresh batches): returns ``W`` ``[inst, m, n]``,
    ``b`` ``[inst, n]`` and the summed loss every 100 steps."""
    config = config or ToyConfig()
    generator = torch.Generator().manual_seed(config.seed)
    W = torch.nn.Parameter(torch.randn(config.n_instances, config.d_hidden, config.n_features, generator=generator)
                           * (2 / (config.d_hidden + config.n_features)) ** 0.5)
    b = torch.nn.Parameter(torch.zeros(config.n_instances, config.n_features))
    optimizer = torch.optim.Adam([W, b], lr=config.lr)
    importance, probability, log = config.importance(), config.probability(), []
    for step in range(config.steps):
        x = toy_batch(config.batch_size, probability, config.n_features, generator)
        loss = importance_loss(x, toy_forward(W, b, x), importance).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            log.append(loss.item())
    return W.detach(), b.detach(), log


def dimensionality(W: torch.Tensor) -> torch.Tensor:
    """The paper's per-feature dimensionality ``D_i = |W_i|^2 / sum_j (W^_i . W_j)^2`` (``W_i`` is
    feature i's column, ``W^_i`` its unit vector): 1 for a dedicated dimension, 1/2 for an
    antipodal pair, 2/5 for a pentagon, 0 for a feature that is not represented.
    ``W`` ``[inst, m, n]`` -> ``[inst, n]``."""
    norms = W.norm(dim=1)  # [inst, n]
    unit = W / norms[:, None].clamp_min(1e-6)
    overlap = torch.einsum("imk,imj->ikj", unit, W)  # [inst, n, n]: W^_k . W_j
    return norms ** 2 / (overlap ** 2).sum(-1).clamp_min(1e-12)


def feature_angles(W: torch.Tensor, threshold: float = 0.5) -> list[float]:
    """Sorted angles in degrees (0..360) of the represented features (norm > ``threshold``) of
    one instance with ``m = 2``: ``W`` ``[2, n]``."""
    keep = W.norm(dim=0) > threshold
    angles = torch.rad2deg(torch.atan2(W[1, keep], W[0, keep])) % 360
    return sorted(angles.tolist())
