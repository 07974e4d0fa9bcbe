"""The MLP of the 1-layer addition model: what its neurons respond to, and how many it needs.

The seed's central claim is that the heads bring digit pairs to each answer position and the
MLP combines them ("using 60 trigrams"). Here: a neuron's mean activation as a function of the
digit pair of one column (a *grid* ``[10, 10]``), how much of a grid a simple feature of the
pair explains (sum, sum mod 10, carry, sum is 9), the seed's effective weights
``W_E @ W_V @ W_O @ W_in``, the embedding's singular values against random matrices, and how
many neurons, or directions of the hidden layer, keep the model's accuracy.

Shapes: tokens ``[batch, 18]``; MLP activations ``[batch, 18, d_mlp]`` (``d_mlp`` = 256).
"""

from __future__ import annotations

import torch

from mi_course.addition import data
from mi_course.addition.analysis import exact_match

POST_HOOK = "blocks.0.mlp.hook_post"  # [batch, pos, d_mlp], after the ReLU
PRE_HOOK = "blocks.0.mlp.hook_pre"  # [batch, pos, d_mlp], before it

_S = torch.arange(10)[:, None] + torch.arange(10)[None]  # x + y over the grid [10, 10]
PAIR_FEATURES = {  # a feature of the digit pair: its value in every cell of the grid [10, 10]
    "carry": (_S >= 10).long(),
    "sum is 9": (_S == 9).long(),
    "sum mod 10": _S % 10,
    "sum": _S,
}


@torch.no_grad()
def _activations(model, tokens: torch.Tensor, hook: str) -> torch.Tensor:
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return cache[hook]  # [batch, 18, d_mlp]


def _grid(acts: torch.Tensor, tokens: torch.Tensor, column: int) -> torch.Tensor:
    """Activations ``[batch, d_mlp]`` averaged by the digit pair of ``column``: ``[d_mlp, 10, 10]``."""
    x, y = data.operands(tokens)
    cell = x[:, column] * 10 + y[:, column]
    sums = torch.zeros(100, acts.shape[-1]).index_add_(0, cell, acts)
    counts = torch.bincount(cell, minlength=100).float()
    return (sums / counts[:, None]).T.reshape(-1, 10, 10)


def neuron_grid(model, tokens: torch.Tensor, k: int, column: int, hook: str = POST_HOOK) -> torch.Tensor:
    """Each neuron's mean activation at the position predicting answer digit ``k`` (11 + k),
    grouped by the digit pair ``(x_column, y_column)``: ``[d_mlp, 10, 10]`` (row x, column y;
    NaN for a pair absent from ``tokens``)."""
    return _grid(_activations(model, tokens, hook)[:, data.PREDICT_POSITIONS[k]], tokens, column)


def feature_r2(grids: torch.Tensor) -> torch.Tensor:
    """How much of each grid's variance over the 100 digit pairs each of ``PAIR_FEATURES``
    explains (the share left after replacing every cell by its feature group's mean):
    ``[d_mlp, len(PAIR_FEATURES)]`` from grids ``[d_mlp, 10, 10]``; NaN for a flat grid."""
    flat = grids.reshape(len(grids), 100)
    centred = flat - flat.mean(-1, keepdim=True)
    total = (centred**2).sum(-1)
    out = []
    for values in PAIR_FEATURES.values():
        group = values.flatten()
        onehot = torch.nn.functional.one_hot(group).float()  # [100, groups]
        means = (flat @ onehot) / onehot.sum(0)
        residual = flat - means[:, group]
        out.append(1 - (residual**2).sum(-1) / total)
    return torch.stack(out, -1).where(total[:, None] > 1e-12, torch.tensor(float("nan")))


def classify_neurons(model, tokens: torch.Tensor, k: int = 3, threshold: float = 0.8, quiet: float = 0.02,
                     hook: str = POST_HOOK) -> list[str]:
    """A label per neuron for answer digit ``k`` (needs columns ``k - 1 .. k + 1``): the column
    offset (0: own column, 1 or 2 to the right) whose digit pair moves its activation most, and
    the coarsest feature of that pair explaining ``threshold`` of the grid's variance (features
    in ``PAIR_FEATURES`` order, "carry" first), e.g. ``"offset 1: carry"``; ``"offset 0: other"``
    when none does; ``"quiet"`` when no pair moves its mean activation by ``quiet`` or more."""
    acts = _activations(model, tokens, hook)[:, data.PREDICT_POSITIONS[k]]
    grids = torch.stack([_grid(acts, tokens, k - 1 + o) for o in range(3)])  # [3, d_mlp, 10, 10]
    spread = grids.flatten(2).std(-1)  # [3, d_mlp]
    offset = spread.argmax(0)  # [d_mlp]
    best = grids[offset, torch.arange(grids.shape[1])]  # [d_mlp, 10, 10]
    explained = feature_r2(best) >= threshold  # [d_mlp, features]
    names = list(PAIR_FEATURES)
    labels = []
    for n in range(len(best)):
        found = explained[n].nonzero()
        feature = names[int(found[0])] if len(found) else "other"
        labels.append("quiet" if spread[offset[n], n] < quiet else f"offset {int(offset[n])}: {feature}")
    return labels


def effective_weights(model) -> torch.Tensor:
    """The seed's ``W_neur = W_E @ W_V @ W_O @ W_in`` per head, digits only (LayerNorms and biases
    left out, as the seed did): how a digit token read by head h pushes each neuron,
    ``[head, 10, d_mlp]``."""
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    return torch.einsum("tm,hmd,hdn,nf->htf", model.W_E[:10], attn.W_V, attn.W_O, mlp.W_in).detach()


def additive_fit(grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best fit ``grid[x, y] ~ m + a[x] + b[y]`` of grids ``[n, 10, 10]``: returns ``a``
    ``[n, 10]``, ``b`` ``[n, 10]`` (each centred) and the share of variance explained ``[n]``."""
    m = grids.mean((-1, -2), keepdim=True)
    a = grids.mean(-1, keepdim=True) - m
    b = grids.mean(-2, keepdim=True) - m
    residual = grids - m - a - b
    total = ((grids - m) ** 2).sum((-1, -2))
    return a[..., 0], b[..., 0, :], 1 - (residual**2).sum((-1, -2)) / total


def top_share(matrix: torch.Tensor, k: int) -> float:
    """Share of a matrix's squared singular values (its variance) in the top ``k``."""
    s = torch.linalg.svdvals(matrix - matrix.mean(0))
    return float((s[:k] ** 2).sum() / (s**2).sum())


def embedding_spectrum(model, k: int = 2, n_random: int = 500, seed: int = 0) -> tuple[float, torch.Tensor]:
    """The digit embeddings' ``top_share(W_E[:10], k)`` and the same for ``n_random`` Gaussian
    matrices of the same shape (the seed's control): ``(float, [n_random])``."""
    digits = model.W_E[:10].detach()
    generator = torch.Generator().manual_seed(seed)
    random = [top_share(torch.randn(digits.shape, generator=generator), k) for _ in range(n_random)]
    return top_share(digits, k), torch.tensor(random)


@torch.no_grad()
def _post_stats(model, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden activations' mean per position ``[18, d_mlp]`` over ``reference``, and their
    deviations from it at the answer positions, pooled: ``[batch * 6, d_mlp]``."""
    acts = _activations(model, reference, POST_HOOK)
    means = acts.mean(0)
    return means, (acts - means)[:, data.PREDICT_POSITIONS].flatten(0, 1)


def _mean_replaced(means: torch.Tensor, keep: torch.Tensor):
    """A hook keeping the neurons where ``keep`` (bool ``[d_mlp]``) and mean-ablating the rest."""

    def hook(act, hook):
        return torch.where(keep, act, means)

    return (POST_HOOK, hook)


def neuron_sweep(model, tokens: torch.Tensor, reference: torch.Tensor, counts: list[int]) -> tuple[list[float], torch.Tensor]:
    """Exact match on ``tokens`` keeping only the top ``n`` neurons, for each ``n`` in ``counts``
    (the others mean-ablated: replaced by their mean over ``reference`` at each position).
    Neurons are ranked by how much they move the residual at the answer positions (mean
    ``|activation - mean|`` times the norm of their output weights). Returns the accuracies and
    the ranking ``[d_mlp]``, largest first."""
    means, deviations = _post_stats(model, reference)
    ranking = (deviations.abs().mean(0) * model.blocks[0].mlp.W_out.norm(dim=-1)).argsort(descending=True)
    accuracies = []
    for n in counts:
        keep = torch.zeros(len(ranking), dtype=torch.bool)
        keep[ranking[:n]] = True
        accuracies.append(exact_match(model, tokens, [_mean_replaced(means, keep)]).float().mean().item())
    return accuracies, ranking


@torch.no_grad()
def direction_sweep(model, tokens: torch.Tensor, reference: torch.Tensor, ranks: list[int]) -> list[float]:
    """Exact match on ``tokens`` when the hidden activations at the answer positions keep only
    their top ``r`` principal directions (over ``reference``, around each position's mean), for
    each ``r`` in ``ranks``."""
    means, deviations = _post_stats(model, reference)
    directions = torch.linalg.svd(deviations, full_matrices=False).Vh  # [d_mlp, d_mlp], by variance
    positions = data.PREDICT_POSITIONS
    accuracies = []
    for r in ranks:
        basis = directions[:r]

        def hook(act, hook, basis=basis):
            act = act.clone()
            act[:, positions] = means[positions] + (act[:, positions] - means[positions]) @ basis.T @ basis
            return act

        accuracies.append(exact_match(model, tokens, [(POST_HOOK, hook)]).float().mean().item())
    return accuracies
