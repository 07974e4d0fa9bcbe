"""mi_course.truncation: the model run by hand through its layers, on the embedded model and on the tiny
random models of every supported architecture (tests/test_architectures.py's builders). Invariants that
hold for any weights: the rebuilt forward equals the model, truncating at k = n_layers is the model,
skipping nothing is the model, and the fast paths equal the plain loop."""

import pytest
import torch

from mi_course import ablation, lens, skipping
from mi_course import truncation as tr
from mi_course.tokens import encode

from test_architectures import CONFIGS, tiny, tokenizer  # noqa: F401  (tokenizer is a fixture)

ATOL = 1e-4
PROMPTS = ["1 2 3 4 ", "A, B, C, D,"]  # 8 tokens each on the embedded tokenizer


@pytest.fixture(scope="module", params=list(CONFIGS))
def small(request, tokenizer):  # noqa: F811
    torch.set_grad_enabled(False)
    return tiny(request.param, tokenizer)


@pytest.fixture(scope="module")
def embedded(model):
    """The embedded model (conftest's ``model`` fixture)."""
    return model


def _ids(model):
    return encode(model, PROMPTS)


def _check_invariants(model, atol):
    ids = _ids(model)
    full = model.hf(ids).logits
    n = model.n_layers
    assert torch.allclose(tr.forward_through(model, ids), full, atol=atol), "the rebuilt forward equals the model"
    assert torch.allclose(tr.forward_through(model, ids, range(n)), full, atol=atol)
    truncated = tr.truncated_logits(model, ids)                              # [n + 1, batch, vocab]
    assert truncated.shape == (n + 1, ids.shape[0], full.shape[-1])
    assert torch.allclose(truncated[n], full[:, -1], atol=atol), "truncating at k = n_layers is the model"
    for k in (0, 1, n - 1):
        assert torch.allclose(truncated[k], tr.forward_through(model, ids, range(k))[:, -1], atol=atol), k
    sets = [[], [0], [n - 1], list(range(n)), [0, n - 1]][: 3 + (n > 2)]
    fast = tr.skip_set_logits(model, ids, sets)
    assert torch.allclose(fast[0], full[:, -1], atol=atol), "skipping nothing is the model"
    for s, row in zip(sets, fast):
        kept = [l for l in range(n) if l not in s]
        assert torch.allclose(row, tr.forward_through(model, ids, kept)[:, -1], atol=atol), s
    nn_skips = skipping.skip_logits(model, ids, [[(l, "block") for l in s] for s in sets])
    assert torch.allclose(fast, nn_skips, atol=atol), "equals skipping.skip_logits with block skips"


def test_invariants_on_every_architecture(small):
    _check_invariants(small, ATOL)


def test_invariants_on_the_embedded_model(embedded):
    _check_invariants(embedded, 1e-3)


def test_heads_sum_to_the_attention_output(small):
    """Each head's part of the output projection sums (plus the projection's bias) to the attention output."""
    from mi_course import architecture
    from mi_course.activations import hooks

    ids = _ids(small)
    parts, final = tr.head_outputs(small, ids)                  # [n_layers, n_heads, batch, d_model], [batch, d_model]
    layers = architecture.layers(small.hf)
    seen = []
    with hooks([architecture.out_proj(l).register_forward_hook(lambda m, i, o: seen.append(o[:, -1])) for l in layers]):
        small.hf(ids)
    for i, (layer, out) in enumerate(zip(layers, seen)):
        bias = getattr(architecture.out_proj(layer), "bias", None)
        expected = out - (bias if bias is not None else 0.0)
        assert torch.allclose(parts[i].sum(0), expected, atol=ATOL), i
    assert torch.allclose(final, lens.residuals_hooks(small, ids)[-1, :, -1], atol=ATOL)


def test_ablation_drops_match_ablate_heads(small):
    ids = _ids(small)
    answers = torch.tensor([5, 7])
    heads = [(0, 0), (1, 3), (0, 2), (0, 0)]
    drops = tr.ablation_drops(small, ids, answers, heads)
    full = small.hf(ids).logits[:, -1]
    expected = torch.stack([full[b, answers[b]] - ablation.ablate_heads(small, ids[b : b + 1], heads)[:, answers[b]]
                            for b in range(2)]).mean(0)
    assert torch.allclose(drops, expected, atol=ATOL)
    assert torch.allclose(drops[0], drops[3]), "each head from the full model: the same head twice, the same drop"


def test_successor_scores_and_attribution_add_up(embedded):
    """Head attributions are parts of the logit: zero for a head whose output is zeroed, and their
    difference to two tokens is the successor score."""
    ids = encode(embedded, PROMPTS)
    nexts, currents = torch.tensor([20, 30]), torch.tensor([21, 31])
    scores = tr.successor_scores(embedded, ids, nexts, currents)
    assert scores.shape == (embedded.n_layers, embedded.config.num_attention_heads, 2)
    assert torch.allclose(scores, tr.head_logit_attribution(embedded, ids, nexts) - tr.head_logit_attribution(embedded, ids, currents))


def test_without_normalization(small):
    ids = _ids(small)
    full = small.hf(ids).logits[:, -1]
    layers = tr.architecture.layers(small.hf)
    assert len(tr.sublayer_norms(layers[0])) == 2
    assert torch.allclose(tr.without_normalization(small, ids, []), full, atol=ATOL), "no norm touched: the model"
    changed = tr.without_normalization(small, ids, tr.sublayer_norms(layers[0]))
    assert not torch.allclose(changed, full, atol=1e-3)


def test_final_norm_without_normalization_keeps_ranks(embedded):
    """RMSNorm's normalization only scales each position: without it the logits are proportional."""
    ids = _ids(embedded)
    full = embedded.hf(ids).logits[:, -1]
    plain = tr.without_normalization(embedded, ids, [tr.architecture.final_norm(embedded.hf)])
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    assert torch.allclose(unit(plain), unit(full), atol=1e-5), "one positive factor per prompt"
    assert torch.equal(plain.argmax(-1), full.argmax(-1))


def test_smallest_k_and_ranges():
    ranks = torch.tensor([[5, 3, 1], [0, 2, 1], [1, 0, 1], [0, 0, 2]])
    assert tr.smallest_k(ranks) == [1, 2, None]
    assert tr.contiguous_ranges(5, 2) == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert tr.stack_runs(2) == {"attention only": [(0, "mlp"), (1, "mlp")], "MLP only": [(0, "attn"), (1, "attn")]}


def test_continues_checks_every_answer_token(embedded):
    got = tr.continues(embedded, ["1 2 3 4 ", "1 2 3 4 ", "10 11 12 13 "], ["5", "6", "14"])
    assert got[0] and not got[1]
    logits = embedded.hf(encode(embedded, "10 11 12 13 14")).logits[0]
    ids = encode(embedded, "10 11 12 13 14")[0]
    assert got[2] == bool((logits[-3:-1].argmax(-1) == ids[-2:]).all())
