"""mi_course.sampling (lesson 1's free generation) against hand-made distributions and transformers."""

import torch
import transformers

from mi_course import sampling as S

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


def test_filtered_probs_rules():
    probs = LOGITS.softmax(-1)
    assert torch.allclose(S.filtered_probs(LOGITS), probs)
    assert torch.allclose(S.filtered_probs(LOGITS, 2.0), (LOGITS / 2).softmax(-1))
    assert torch.equal(S.filtered_probs(LOGITS, 0), torch.tensor([1.0, 0, 0, 0, 0, 0]))
    top3 = S.filtered_probs(LOGITS, top_k=3)
    assert int((top3 > 0).sum()) == 3 and torch.allclose(top3[:3], probs[:3] / probs[:3].sum())
    for p in (0.3, 0.7, 0.9, 0.99):
        kept = int((S.filtered_probs(LOGITS, top_p=p) > 0).sum())
        assert probs[:kept].sum() >= p and (kept == 1 or probs[:kept - 1].sum() < p)


def test_matches_transformers_warpers():
    torch.manual_seed(0)
    logits = torch.randn(1, 50) * 3
    for t, k, p in [(0.7, 10, 0.9), (1.5, None, 0.5), (1.0, 5, None)]:
        warpers = [transformers.TemperatureLogitsWarper(t)]
        warpers += [transformers.TopKLogitsWarper(k)] if k else []
        warpers += [transformers.TopPLogitsWarper(p)] if p else []
        scores = logits.clone()
        for w in warpers:
            scores = w(None, scores)
        assert torch.allclose(S.filtered_probs(logits[0], t, k, p), scores[0].softmax(-1), atol=1e-6)


def test_sampler_frequencies_within_bounds():
    gen, n = torch.Generator().manual_seed(0), 4000
    want = S.filtered_probs(LOGITS, 0.8, top_k=4)
    counts = torch.bincount(torch.tensor([S.sample_next_token(LOGITS, 0.8, 4, None, gen) for _ in range(n)]),
                            minlength=len(LOGITS))
    assert ((counts / n - want).abs() <= S.frequency_bounds(want, n)).all() and counts[4:].sum() == 0
