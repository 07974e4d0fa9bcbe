"""mi_course.addition.prompts: prompts by category, answer reading, digit targets, accuracy."""

import pytest
import torch

from mi_course.addition import prompts
from mi_course.addition.prompts import ArithmeticPrompt
from mi_course.tokens import encode

SEED = ArithmeticPrompt(161, 224, shots=((122, 125),))


def test_prompt_text_and_answer():
    assert SEED.text == "122 + 125 = 247; 161 + 224 ="
    assert SEED.answer == 385
    sub = ArithmeticPrompt(8, 3, shots=((9, 4),), op="-")
    assert sub.text == "9 - 4 = 5; 8 - 3 =" and sub.answer == 5
    assert ArithmeticPrompt(3, 4).text == "3 + 4 ="


@pytest.mark.parametrize("a, b, carry", [(161, 224, False), (15, 25, True), (5, 5, True), (0, 0, False), (950, 50, True)])
def test_has_carry(a, b, carry):
    assert prompts.has_carry(a, b) is carry


@pytest.mark.parametrize("n_digits", [1, 2, 3])
@pytest.mark.parametrize("carry", [False, True, None])
def test_sample_pairs_respect_the_category(n_digits, carry):
    pairs = prompts.sample_pairs(n_digits, carry, 15, seed=3)
    assert len(set(pairs)) == 15
    assert all(len(str(x)) == n_digits for pair in pairs for x in pair)
    if carry is not None:
        assert all(prompts.has_carry(*pair) is carry for pair in pairs)
    assert pairs == prompts.sample_pairs(n_digits, carry, 15, seed=3)
    assert pairs != prompts.sample_pairs(n_digits, carry, 15, seed=4)


def test_shots_keep_the_answer_length():
    shots = prompts.shot_pairs(2, 5, seed=0)
    assert all(a and b and 10 <= a + b < 100 for a, b in shots)


def test_category_prompts_share_shots_and_token_length(model):
    batch = prompts.category_prompts(3, True, n_shots=2, n=6, seed=0)
    assert len({p.shots for p in batch}) == 1 and len(batch[0].shots) == 2
    assert encode(model, [p.text for p in batch]).shape == (6, 2 * 15 + 9)


@pytest.mark.parametrize(
    "text, value",
    [(" 385;", 385), ("47", 47), (" ;", None), ("  12", None), ("", None), (" 12 34", 12), (" 09\n", 9)],
)
def test_read_answer(text, value):
    assert prompts.read_answer(text) == value


def test_digit_targets_predict_the_digits(model):
    ids, targets, positions = prompts.digit_targets(model, SEED.text, SEED.answer)
    assert [model.tokenizer.decode([t]) for t in targets] == ["3", "8", "5"]
    assert positions == [24, 25, 26]
    assert model.tokenizer.decode([int(ids[0, positions[0]])]) == " "
    logits = model.hf(ids).logits[0]
    assert [int(logits[q].argmax()) for q in positions] == targets
    assert prompts.digit_token_ids(model) == [int(encode(model, str(d))[0, 0]) for d in range(10)]


def test_greedy_continuations_match_generate(model):
    texts = [SEED.text, ArithmeticPrompt(353, 214, ((122, 125),)).text]
    ours = prompts.greedy_continuations(model, texts, 4)
    ids = encode(model, texts)
    out = model.hf.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=model.tokenizer.eos_token_id)
    assert ours == [model.tokenizer.decode(row[ids.shape[1]:]) for row in out]
    assert ours[0].startswith(" 385")


def test_exact_match_prompts_and_accuracy(model):
    right = [SEED, ArithmeticPrompt(353, 214, ((122, 125),))]
    wrong = [ArithmeticPrompt(161, 395, ((122, 125),))]  # the model answers 346
    assert prompts.exact_match_prompts(model, right + wrong) == [True, True, False]
    assert prompts.accuracy_by_prompt_set(model, {"right": right, "wrong": wrong}) == {"right": 1.0, "wrong": 0.0}


def test_prompt_with_shots_of_another_operation():
    q = ArithmeticPrompt(8, 3, shots=((7, 2),), op="-", shot_op="+")
    assert q.text == "7 + 2 = 9; 8 - 3 =" and q.answer == 5


def test_interchange_hypotheses_for_either_operand():
    base, source = ArithmeticPrompt(1, 3, shots=((7, 2),)), ArithmeticPrompt(5, 2, shots=((7, 2),))
    assert list(prompts.interchange_hypotheses(base, source).items()) == [("base", 4), ("operand", 8), ("result", 7), ("copied", 5)]
    assert prompts.interchange_hypotheses(base, source, "second") == {"base": 4, "operand": 3, "result": 7, "copied": 2}
    assert prompts.interchange_hypotheses(ArithmeticPrompt(8, 3, op="-"), ArithmeticPrompt(6, 1, op="-"), "first") == {
        "base": 5, "operand": 3, "result": 5, "copied": 6}
    with pytest.raises(ValueError):
        prompts.interchange_hypotheses(base, source, "third")


def test_verdicts_and_counts():
    hyps = [{"base": 4, "operand": 8, "result": 7, "copied": 5}, {"base": 12, "operand": 3}]
    probs = torch.zeros(2, 2, 10)
    probs[0, 0, 8] = probs[0, 1, 1] = probs[1, 0, 9] = probs[1, 1, 3] = 1.0  # 12 is read by its first digit, 1
    assert prompts.verdicts(probs[0], hyps) == ["operand", "base"]
    assert prompts.verdicts(probs[1], hyps) == ["other", "operand"]
    assert prompts.verdict_counts(probs, hyps).tolist() == [[1, 1, 0, 0, 0], [0, 1, 0, 0, 1]]
    assert prompts.verdict_counts(probs[0], hyps, ["operand"]).tolist() == [1]


def test_separating_pairs_separate_and_are_solved(model):
    pairs = prompts.separating_pairs(model, 12, seed=0)
    assert pairs == prompts.separating_pairs(model, 12, seed=0) != prompts.separating_pairs(model, 12, seed=1)
    assert pairs[:6] == prompts.separating_pairs(model, 6, seed=0)
    questions = []
    for base, source in pairs:
        first, second = (prompts.interchange_hypotheses(base, source, w) for w in ("first", "second"))
        assert len({*first.values(), second["operand"], second["copied"]}) == 6 and max(first.values()) < 10
        questions += [base, source, ArithmeticPrompt(source.a, base.b, base.shots), ArithmeticPrompt(base.a, source.b, base.shots)]
    top = model.hf(encode(model, [q.text + " " for q in questions])).logits[:, -1, prompts.digit_token_ids(model)].argmax(-1)
    assert top.tolist() == [q.answer for q in questions]


def test_operator_pairs_differ_in_the_operator_only(model):
    pairs = prompts.operator_pairs(model)
    assert len(pairs) >= 20
    for base, source in pairs:
        a, b = encode(model, base.text), encode(model, source.text)
        assert (a != b).sum() == 1 and model.tokenizer.decode(b[a != b]) == " -"
        assert prompts.first_digit(base.answer) != source.answer


@pytest.fixture(scope="module")
def few(model):
    """Four separating pairs as texts ending with the bare space."""
    pairs = prompts.separating_pairs(model, 4, seed=2)
    return pairs, [b.text + " " for b, _ in pairs], [s.text + " " for _, s in pairs]


@pytest.mark.parametrize("component, position", [("block_output", 9), ("block_output", 14), ("attention_output", 14),
                                                   ("mlp_output", 12), ("attention_output", 0)])
def test_patch_digit_probs_is_a_pyvene_interchange(model, few, component, position):
    _, bases, sources = few
    got = prompts.patch_digit_probs(model, bases, sources, [0, 20, 29], [position], component)
    assert got.shape == (3, 4, 10)
    for row, layer in zip(got, [0, 20, 29]):
        want = prompts.interchange_rows(model, [(b, s, position) for b, s in zip(bases, sources)], layer, component)
        assert torch.allclose(row, want, atol=1e-4), (component, position, layer)


def test_patch_digit_probs_heads_and_groups_match_nnsight(model, few):
    _, bases, sources = few
    lm, n, d = model.nnsight, len(bases), model.config.hidden_size // model.config.num_attention_heads
    with lm.trace(encode(model, sources)):
        resid = lm.model.layers[8].output.save()   # in forward order: layer 8 before layer 20
        heads_in = lm.model.layers[20].self_attn.o_proj.input[:, 14].save()
    with lm.trace(encode(model, bases).repeat(2, 1)):
        x = lm.model.layers[20].self_attn.o_proj.input
        for r, h in enumerate((8, 3)):
            x[r * n:(r + 1) * n, 14, h * d:(h + 1) * d] = heads_in[:, h * d:(h + 1) * d]
        logits = lm.lm_head.output.save()
    want = logits[:, -1, prompts.digit_token_ids(model)].softmax(-1).reshape(2, n, 10)
    got = prompts.patch_digit_probs(model, bases, sources, [20], [14], heads=[8, 3])
    assert got.shape == (1, 2, n, 10) and torch.allclose(got[0], want, atol=1e-4)
    group = [10, 11, 12, 13]
    with lm.trace(encode(model, bases)):
        lm.model.layers[8].output[:, group] = resid[:, group]
        logits = lm.lm_head.output.save()
    want = logits[:, -1, prompts.digit_token_ids(model)].softmax(-1)
    assert torch.allclose(prompts.patch_digit_probs(model, bases, sources, [8], group)[0], want, atol=1e-4)


def test_patch_digit_probs_freeze_and_errors(model, few):
    pairs, bases, sources = few
    whole = prompts.patch_digit_probs(model, bases, sources, [5], range(15))[0]   # every position: the source's run
    source_probs = model.hf(encode(model, sources)).logits[:, -1, prompts.digit_token_ids(model)].softmax(-1)
    assert torch.allclose(whole, source_probs, atol=1e-4)
    free = prompts.patch_digit_probs(model, bases, sources, [20], [14], "attention_output")
    held = prompts.patch_digit_probs(model, bases, sources, [20], [14], "attention_output", freeze_mlps=True)
    base_probs = model.hf(encode(model, bases)).logits[:, -1, prompts.digit_token_ids(model)].softmax(-1)
    assert (held[0] - base_probs).abs().max() < (free[0] - base_probs).abs().max()
    with pytest.raises(ValueError):
        prompts.patch_digit_probs(model, bases, sources, [20], [14], "block_output", freeze_mlps=True)
    with pytest.raises(ValueError):
        prompts.patch_digit_probs(model, bases, sources, [20], [14], "resid")


def test_follow_rates_and_operator_rates(model, few):
    pairs, _, _ = few
    rates = prompts.follow_rates(model, pairs, "first", 14, [0, 29])
    assert rates.shape == (2, 5) and torch.allclose(rates.sum(-1), torch.ones(2))
    assert rates[0, 0] == 1 and rates[1, 2] == 1   # nothing at layer 0, the source's own output at the last layer
    op = prompts.operator_pairs(model)[:6]
    shares = prompts.operator_rates(model, op, 4, [list(range(15)), [0]])
    assert shares.tolist() == [1.0, 0.0]


def test_interchange_rows_is_one_pyvene_patch_per_row(model):
    from mi_course.patching import pyvene_patch

    base, source = ArithmeticPrompt(3, 4, ((7, 2),)).text + " ", ArithmeticPrompt(5, 4, ((7, 2),)).text + " "
    last = encode(model, base).shape[1] - 1
    rows = [(base, source, 9), (base, source, last), (source, base, last)]
    got = prompts.interchange_rows(model, rows, 20)
    digits = prompts.digit_token_ids(model)
    for row, (b, s, p) in zip(got, rows):
        want = pyvene_patch(model, encode(model, s), encode(model, b), 20, "block_output", p)[0, -1, digits].softmax(-1)
        assert torch.allclose(row, want, atol=1e-4)
    assert int(got[1].argmax()) == 9 and int(got[2].argmax()) == 7   # at the last position from layer 20 on
