"""mi_course.logits (lesson 1's references) on the embedded model."""

import pytest
import torch

from mi_course import load_model
from mi_course import logits as L

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model()


def test_tokens_and_logits(model):
    tokens, ids = L.tokens_and_ids(model, "Interpretability is fun")
    assert tokens == model.tokenizer.convert_ids_to_tokens(ids) and "Ġis" in tokens
    logits = L.prompt_logits(model, PROMPT)
    assert logits.shape == (len(ids := model.tokenizer(PROMPT)["input_ids"]), len(model.tokenizer))
    assert torch.equal(logits, model.hf(torch.tensor([ids])).logits[0].detach())
    probs = L.next_token_probs(logits)
    assert probs.shape == (len(model.tokenizer),) and abs(float(probs.sum()) - 1) < 1e-4


def test_top_tokens_and_prediction(model):
    probs = L.next_token_probs(L.prompt_logits(model, PROMPT))
    top = L.top_k_tokens(model, probs, 3)
    assert [t for t, _ in top] == L.top_next_tokens(model, PROMPT, 3)
    assert top[0][0] == L.predict_next_token(model, PROMPT) == " Paris"
    assert top[0][1] == pytest.approx(float(probs.max())) and top[0][1] >= top[1][1] >= top[2][1]
    assert L.top_next_tokens(model, PROMPT + " ", 3)[0] != " Paris"


def test_read_number_answer(model):
    assert L.read_number_answer(model, "122 + 125 = 247; 161 + 224 =") == 385
    assert L.read_number_answer(model, "122 + 125 = 247; 161 + 224 =", 2) == 3
    assert L.read_number_answer(model, "The capital of France is", 4) is None
