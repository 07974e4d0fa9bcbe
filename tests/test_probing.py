"""mi_course.probing: datasets, batched activation collection, probes, control tasks, steering."""

import numpy as np
import pytest
import torch

from mi_course import load_model, probing
from mi_course.tokens import token_id


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model()


def test_addition_dataset_is_seeded_and_labelled():
    data = probing.addition_dataset(n=50, seed=1, label="carry")
    again = probing.addition_dataset(n=50, seed=1, label="a_ones")
    assert data.prompts == again.prompts and len(set(data.prompts)) == 50
    for prompt, carry, ones in zip(data.prompts, data.labels, again.labels):
        a, b = (int(x) for x in prompt.rstrip(" =").split(" + "))
        assert carry == int(a % 10 + b % 10 >= 10) and ones == a % 10
    assert probing.addition_dataset(n=50, seed=2).prompts != data.prompts
    with pytest.raises(ValueError):
        probing.addition_dataset(label="sum")


def test_city_dataset_covers_every_city_in_every_context():
    data = probing.city_dataset()
    n_cities = sum(len(c) for c in probing.CITIES.values())
    assert len(data) == n_cities * len(probing.CITY_CONTEXTS)
    assert data.classes == list(probing.CITIES)
    paris = [i for i, g in enumerate(data.groups) if g == "Paris"]
    assert len(paris) == len(probing.CITY_CONTEXTS) and all(data.labels[i] == 0 for i in paris)
    assert all(p.endswith(g) for p, g in zip(data.prompts, data.groups))


def test_last_positions():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert probing.last_positions(mask).tolist() == [2, 3, 0]


def test_collect_activations_match_unpadded_forward(model):
    prompts = ["Welcome to Rio de Janeiro", "The city of Paris", "I flew to Kyoto"]
    acts = probing.collect_activations(model, prompts, batch_size=2, progress=False)
    assert acts.shape == (3, model.n_layers, model.d_model) and acts.dtype == torch.float32
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([model.tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=model.device)
        hidden = model.hf(ids, output_hidden_states=True).hidden_states
        for layer in (0, 7, model.n_layers - 2):  # hidden[l + 1] is layer l's output (the last one is normed)
            assert torch.allclose(acts[i, layer], hidden[layer + 1][0, -1].cpu(), atol=1e-4)
    # position counted from the start: token 1 of every prompt
    first = probing.collect_activations(model, prompts, position=1, progress=False)
    ids = torch.tensor([model.tokenizer(prompts[1], add_special_tokens=False)["input_ids"]], device=model.device)
    assert torch.allclose(first[1, 3], model.hf(ids, output_hidden_states=True).hidden_states[4][0, 1].cpu(), atol=1e-4)
    with pytest.raises(ValueError):
        probing.collect_activations(model, prompts, position=-9, progress=False)


def test_splits_are_seeded_and_disjoint():
    labels = np.repeat(np.arange(4), 10)
    train, test = probing.split_indices(labels, test_size=0.25, seed=0)
    assert len(test) == 10 and not set(train) & set(test)
    assert sorted(set(labels[test].tolist())) == [0, 1, 2, 3]  # stratified
    assert probing.split_indices(labels, seed=0)[1].tolist() == test.tolist()
    groups = np.repeat(np.arange(20), 2)
    g_train, g_test = probing.group_split_indices(groups, seed=0)
    assert not set(groups[g_train]) & set(groups[g_test])


def test_linear_probe_reads_a_planted_direction_and_its_direction():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 16)).astype(np.float32)
    y = (X[:, 3] > 0).astype(int)
    X[:, 3] += np.where(y == 1, 1.5, -1.5)  # a margin between the classes
    train, test = probing.split_indices(y, seed=0)
    probe, acc = probing.train_probe(X, y, train, test)
    assert acc >= 0.95
    direction = probing.probe_direction(probe, towards=1)
    assert abs(float(direction.norm()) - 1) < 1e-5 and int(direction.abs().argmax()) == 3 and direction[3] > 0
    assert torch.allclose(probing.probe_direction(probe, towards=0), -direction)
    acts = torch.tensor(np.stack([X, rng.normal(size=X.shape)], axis=1), dtype=torch.float32)   # layer 1 is noise
    by_layer = probing.accuracy_by_layer(acts, y, train, test, progress=False)
    assert by_layer.shape == (2,) and by_layer[0] >= 0.95 and by_layer[1] < 0.75


def test_multiclass_direction_and_mlp_probe():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40)
    X = rng.normal(size=(120, 8)).astype(np.float32)
    X[np.arange(120), y] += 3.0
    train, test = probing.split_indices(y, seed=0)
    probe, _ = probing.train_probe(X, y, train, test)
    d = probing.probe_direction(probe, towards=2, away=0)
    assert d[2] > 0 and d[0] < 0
    assert probing.train_probe(X, y, train, test, kind="mlp")[1] >= 0.8
    with pytest.raises(ValueError):
        probing.make_probe("forest")


def test_control_labels_follow_types_not_examples():
    groups = np.array(["a", "b", "a", "c", "b", "a"] * 5)
    labels = probing.control_labels(groups, n_classes=4, seed=0)
    for g in set(groups):
        assert len(set(labels[groups == g])) == 1
    assert labels.min() >= 0 and labels.max() < 4
    assert probing.control_labels(groups, 4, seed=0).tolist() == labels.tolist()
    many = np.array([f"t{i}" for i in range(50)])
    assert probing.control_labels(many, 4, seed=0).tolist() != probing.control_labels(many, 4, seed=1).tolist()
    assert probing.selectivity([0.9, 0.8], [0.5, 0.8]).tolist() == pytest.approx([0.4, 0.0])


def test_steered_logits(model):
    prompts, positions = probing.country_questions(model, "France")
    assert len(prompts) == len(probing.CITIES["France"])
    tokens = model.tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
    assert model.tokenizer.decode(tokens[positions[0]]).strip() == "Paris"
    few, pos = prompts[:2], positions[:2]
    clean = probing.steered_logits(model, few, 5, torch.zeros(model.d_model), 0.0, pos)
    ids = torch.tensor([model.tokenizer(few[1], add_special_tokens=False)["input_ids"]], device=model.device)
    assert torch.allclose(clean[1], model.hf(ids).logits[0, -1].cpu(), atol=1e-3)
    assert model.tokenizer.decode(int(clean[0].argmax())) == " France"
    direction = torch.zeros(model.d_model)
    direction[0] = 1.0
    pushed = probing.steered_logits(model, few, 5, direction, 50.0, pos)
    assert not torch.allclose(pushed, clean, atol=1e-2)
    fr = token_id(model, " France")
    assert pushed.shape == (2, len(model.tokenizer)) and torch.isfinite(pushed[:, fr]).all()


def test_steered_logits_many_equals_one_at_a_time(model):
    prompts, positions = probing.country_questions(model, "Italy")
    few, pos = prompts[:3], positions[:3]
    directions = torch.randn(2, model.d_model, generator=torch.Generator().manual_seed(0))
    many = probing.steered_logits_many(model, few, 7, directions, 30.0, pos)
    one = torch.stack([probing.steered_logits(model, few, 7, d, 30.0, pos) for d in directions])
    assert many.shape == (2, 3, len(model.tokenizer)) and (many - one).abs().max() < 1e-3
    clean = probing.steered_logits_many(model, few, 7, torch.zeros(1, model.d_model), 30.0, pos)[0]
    assert (clean - probing.steered_logits(model, few, 0, torch.zeros(model.d_model), 0.0)).abs().max() < 1e-3
