"""Free generation: the distribution a sampler draws the next token from (temperature, top-k, top-p)."""

import torch


def filtered_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """The next-token distribution after temperature, then top-k, then top-p (as ``transformers``
    applies them): ``[vocab]`` logits -> ``[vocab]`` probabilities, zero outside the kept tokens.
    ``temperature == 0`` is greedy: all mass on the argmax. Top-p keeps the smallest set of most likely
    tokens whose mass is at least ``top_p``."""
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(), logits.shape[-1]).float()
    probs = (logits / temperature).softmax(-1)
    order = probs.argsort(descending=True, stable=True)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if top_k is not None:
        keep[order[top_k:]] = False
    if top_p is not None:
        sorted_probs = torch.where(keep[order], probs[order], 0.0)
        sorted_probs = sorted_probs / sorted_probs.sum()
        before = sorted_probs.cumsum(-1) - sorted_probs       # mass of the tokens ranked above each one
        keep[order[before >= top_p]] = False
    probs = torch.where(keep, probs, 0.0)
    return probs / probs.sum()


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> int:
    """One token id drawn from ``filtered_probs(logits, ...)`` (``[vocab]`` logits)."""
    return int(torch.multinomial(filtered_probs(logits, temperature, top_k, top_p), 1, generator=generator))


def frequency_bounds(probs: torch.Tensor, n: int, z: float = 4.5) -> torch.Tensor:
    """How far each token's empirical frequency over ``n`` independent draws may stray from its
    probability (``[vocab]`` -> ``[vocab]``): ``z`` binomial standard deviations, plus ``1 / n`` for
    the granularity of counts. With ``z = 4.5`` a correct sampler exceeds one token's bound with
    probability about 7e-6 (normal approximation of the binomial)."""
    return z * (probs * (1 - probs) / n).sqrt() + 1 / n

