"""mi_course.addition.prompts: prompts by category, answer reading, digit targets, accuracy."""

import pytest
import torch

from mi_course import load_model
from mi_course.addition import prompts
from mi_course.addition.prompts import ArithmeticPrompt
from mi_course.tokens import encode

SEED = ArithmeticPrompt(161, 224, shots=((122, 125),))


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model()


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


def test_exact_match_and_accuracy(model):
    right = [SEED, ArithmeticPrompt(353, 214, ((122, 125),))]
    wrong = [ArithmeticPrompt(161, 395, ((122, 125),))]  # the model answers 346
    assert prompts.exact_match(model, right + wrong) == [True, True, False]
    assert prompts.accuracy_by_category(model, {"right": right, "wrong": wrong}) == {"right": 1.0, "wrong": 0.0}


def test_interchange_hypotheses_for_either_operand():
    base = ArithmeticPrompt(3, 4, shots=((7, 2),))
    assert prompts.interchange_hypotheses(base, ArithmeticPrompt(5, 4, shots=((7, 2),))) == {"ignored": 7, "operand": 9, "copied": 5}
    assert prompts.interchange_hypotheses(base, ArithmeticPrompt(3, 5, shots=((7, 2),))) == {"ignored": 7, "operand": 8, "copied": 5}
    assert list(prompts.interchange_hypotheses(ArithmeticPrompt(8, 3, op="-"), ArithmeticPrompt(6, 3, op="-")).items()) == [
        ("ignored", 5), ("operand", 3), ("copied", 6)]


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
