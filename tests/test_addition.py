"""Tests of mi_course.addition: the data and its labels (fast), the shipped checkpoints and
their training logs, the analysis helpers (curves, neurons, attribution), and one slow test
that retrains the model from the committed config and checks what the lesson says reproduces."""

import os

import pytest
import torch

from mi_course.addition import analysis, curves, data, neurons
from mi_course.addition import model as addmodel

STATED_ACCURACY = 0.99  # exact match on random 5-digit questions, as the lesson states ("more than 99%")


def _random(n, seed=0, enrich=0.0):
    return data.random_tokens(n, torch.Generator().manual_seed(seed), enrich)


def test_tokens_hold_the_true_sum():
    tokens = _random(500, seed=1)
    x, y = data.operands(tokens)
    assert tokens.shape == (500, data.N_CTX)
    assert torch.equal(data.from_digits(x) + data.from_digits(y), data.from_digits(data.answers(tokens)))
    assert (tokens[:, 5] == data.PLUS).all() and (tokens[:, 11] == data.EQUALS).all()
    assert data.tokens_to_string(data.questions_to_tokens([(555, 445)])[0]) == "00555+00445=001000"


def test_column_labels_partition_and_explain_the_answer():
    tokens = _random(2000, seed=2, enrich=0.3)
    labels = data.column_labels(tokens)
    total = labels["BA"].long() + labels["UC1"].long() + labels["US9"].long()
    assert (total == 1).all(), "BA, UC1 and US9 must partition the columns"
    x, y = data.operands(tokens)
    carry_in = (~labels["BA"]).long()
    assert torch.equal((x + y + carry_in) % 10, data.answers(tokens)[:, 1:])
    assert torch.equal(labels["US9"], labels["MS9"] & ~labels["BA"])
    assert not (labels["MC1"] & labels["MS9"]).any()


@pytest.mark.parametrize("pair, category", [
    ((12345, 33333), "BA"), ((15, 45), "UC1"), ((55, 45), "US9"), ((555, 445), "cascade2"),
    ((5555, 4445), "cascade3"), ((44445, 55555), "cascade4"), ((3340, 6660), "cascade2"),
])
def test_question_category(pair, category):
    assert data.question_category(data.questions_to_tokens([pair])) == [category]


def test_carry_distance_and_digit_carries():
    tokens = data.questions_to_tokens([(555, 445), (12345, 33333)])
    assert data.carry_distance(tokens).tolist() == [[1, 1, 3, 2, 1, 1], [1, 1, 1, 1, 1, 1]]
    assert data.digit_carries(tokens).long().tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]]


def test_category_index_names_the_categories():
    tokens = _random(3000, seed=9, enrich=0.5)
    names = data.question_category(tokens)
    assert [data.CATEGORIES[i] for i in data.category_index(tokens).tolist()] == names
    assert set(names) == set(data.CATEGORIES)


def test_category_tokens_are_of_their_category():
    for name in data.CATEGORIES:
        tokens = data.category_tokens(name, 50, seed=3)
        assert tokens.shape == (50, data.N_CTX)
        assert set(data.question_category(tokens)) == {name}


def test_training_batches_are_seeded_and_enriched():
    first = [next(b) for b in [data.training_batches(64, 5)] for _ in range(10)]
    again = [next(b) for b in [data.training_batches(64, 5)] for _ in range(10)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    x, y = data.operands(first[0])  # batch 0 is enriched
    plain = data.operands(first[1])
    assert ((x + y) == 9).float().mean() > ((plain[0] + plain[1]) == 9).float().mean()


def test_answer_losses_read_the_right_positions():
    tokens = _random(8, seed=4)
    logits = torch.full((8, data.N_CTX, data.D_VOCAB), -30.0)
    logits[torch.arange(8)[:, None], torch.arange(data.N_CTX - 1)[None], tokens[:, 1:]] = 30.0
    losses = addmodel.answer_losses(logits, tokens)
    assert losses.shape == (8, 6) and losses.max() < 1e-6


def test_task_digit_loss_averages_each_sub_task_per_column():
    tokens = _random(200, seed=5, enrich=0.3)
    losses = torch.rand(200, 6, generator=torch.Generator().manual_seed(6))
    got, counts = addmodel.task_digit_loss(losses, tokens), addmodel.task_digit_counts(tokens)
    labels = data.column_labels(tokens)
    assert got.shape == counts.shape == (3, 5) and int(counts.sum()) == 200 * 5
    for j, name in enumerate(addmodel.TASKS):
        for c in range(5):
            mask = labels[name][:, c]
            if mask.any():
                assert torch.isclose(got[j, c], losses[mask, c + 1].mean())
            else:
                assert got[j, c].isnan() and counts[j, c] == 0


def test_rates_carry_their_wilson_interval():
    r = analysis.Rate(292, 300)
    assert r.low < r.p < r.high and abs(r.low - 0.948) < 1e-3 and abs(r.high - 0.9865) < 1e-3
    assert "292/300" in str(r) and analysis.rate(torch.tensor([True, False, True, True])) == analysis.Rate(3, 4)


def test_curves_on_a_synthetic_log():
    steps = torch.arange(1, 1001).float()
    curve = torch.where(steps < 400, torch.tensor(2.0), torch.tensor(0.01))
    assert torch.allclose(curves.smooth(torch.full((100,), 3.0), 10), torch.full((100,), 3.0))
    with_gaps = curve.clone()
    with_gaps[::3] = float("nan")
    assert not curves.smooth(with_gaps, 20).isnan().any()
    assert abs(curves.drop_step(curve, 50) - 400) <= 2 and curves.learnt_step(curve, 0.1, 50) in range(400, 430)
    noisy = curve * torch.exp(torch.randn(1000, generator=torch.Generator().manual_seed(0)))
    assert curves.noise(noisy, 500) > 5 * curves.noise(curve, 500)


def test_pair_features_and_additive_fit():
    s = torch.arange(10)[:, None] + torch.arange(10)[None]
    grids = torch.stack([(s >= 10).float(), (s % 10).float(), torch.arange(10.0)[:, None] + torch.arange(10.0)[None] ** 2])
    r2 = neurons.feature_r2(grids)  # features: carry, sum is 9, sum mod 10, sum
    assert torch.allclose(r2[0, [0, 3]], torch.ones(2)) and r2[0, 2] < 1
    assert torch.allclose(r2[1, 2:], torch.ones(2)) and r2[1, 0] < 0.5
    _, _, additive = neurons.additive_fit(grids)
    assert additive[2] > 0.999 and additive[0] < 0.99


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    return addmodel.load_trained()


def test_shipped_checkpoint(trained):
    model, config, history = trained
    assert addmodel.CHECKPOINTS["1layer"].stat().st_size < 1_000_000
    assert config == addmodel.AdditionConfig(), "the checkpoint must come from the committed config"
    assert history["digit_loss"].shape == (config.steps // config.log_every, 6)
    acc = analysis.accuracy_by_category(model, _random(5000, seed=11))
    assert acc["all"] >= STATED_ACCURACY


@pytest.mark.parametrize("name", ["1layer", "2heads", "4heads"])
def test_shipped_logs_belong_to_their_checkpoints(name):
    """Each log is the training run of the checkpoint beside it: its 10-step means are the
    checkpoint's history (the log keeps float16)."""
    config = addmodel.VARIANTS[name]
    _, saved, history = addmodel.load_trained(config.n_layers, config.n_heads)
    log = addmodel.load_log(config.n_layers, config.n_heads)
    assert saved == config and addmodel.LOGS[name].stat().st_size < 500_000
    assert log["digit_loss"].shape == (config.steps, 6) and log["task_loss"].shape == log["task_count"].shape == (config.steps, 3, 5)
    assert (log["task_count"].sum((1, 2)) == config.batch_size * 5).all()
    means = log["digit_loss"].reshape(-1, config.log_every, 6).mean(1)
    assert torch.allclose(means, history["digit_loss"], rtol=2e-3, atol=1e-4)


def test_replicates_summarise_the_other_runs():
    runs = addmodel.load_replicates()
    assert {"1layer seed 2", "2heads seed 2", "4heads seed 2", "1layer seed 1, earlier machine"} <= set(runs)
    for run in runs.values():
        assert len(run["offsets"]) == len(run["deltas"]) == len(run["clarity"])
        assert all(n == 300 for _, n in run["rates"].values())


def test_shipped_two_layer_checkpoint():
    model, config, _ = addmodel.load_trained(2)
    assert addmodel.CHECKPOINTS["2layer"].stat().st_size < 1_000_000
    assert config == addmodel.AdditionConfig(n_layers=2)
    suite = {name: data.category_tokens(name, 100, seed=21) for name in data.CATEGORIES}
    assert min(analysis.suite_accuracy(model, suite).values()) >= 0.98, "the 2-layer model solves cascades"


def test_staircase_roles_and_ablation(trained):
    model = trained[0]
    tokens = _random(1000, seed=12)
    table = analysis.staircase(model, tokens)
    assert table.shape == (3, 6, 5) and (table >= 0).all() and (table.sum(-1) <= 1 + 1e-5).all()
    roles = analysis.head_roles(table)
    assert sorted(roles.values()) == [0, 1, 2], "each offset should have its own head"
    hook = analysis.ablation_hook(roles[0])
    assert analysis.exact_match(model, tokens, [hook]).float().mean() < 0.5


def test_murk_hooks_change_nothing_in_one_layer(trained):
    model = trained[0]
    tokens = _random(300, seed=15, enrich=0.3)
    hooks = analysis.murk_hooks(model, _random(300, seed=16), range(11))
    assert len(hooks) == 2 and torch.equal(analysis.predict(model, tokens, hooks), analysis.predict(model, tokens))
    assert not torch.equal(analysis.predict(model, tokens, analysis.murk_hooks(model, _random(300, seed=16), [11, 12])),
                           analysis.predict(model, tokens))


def test_loss_deltas_match_a_zeroed_head(trained):
    model = trained[0]
    tokens = _random(300, seed=17)
    base = addmodel.answer_losses(model(tokens), tokens).mean().item()
    ablated = addmodel.answer_losses(model.run_with_hooks(tokens, fwd_hooks=[analysis.ablation_hook(1)]), tokens).mean().item()
    deltas = analysis.loss_deltas(model, tokens)
    assert deltas.shape == (3,) and (deltas < 0).all()
    assert torch.isclose(deltas[1], torch.tensor(100 * (base - ablated) / base), rtol=1e-4)
    assert analysis.loss_deltas(model, tokens, [(0, 1)]).shape == (1,)


def test_head_logit_attribution_and_staircase_measures(trained):
    model = trained[0]
    tokens = _random(500, seed=18)
    dla = analysis.head_logit_attribution(model, tokens)
    assert dla.shape == (3, 6) and dla.isfinite().all()
    table = analysis.staircase(model, tokens)
    clarity = analysis.staircase_clarity(table)
    assert clarity.shape == (3,) and ((0 < clarity) & (clarity <= 1)).all()
    assert analysis.head_offsets(table) == [int(i) - 1 for i in analysis.offset_attention(table).argmax(-1)]
    share = analysis.question_share(model, tokens)
    assert share.shape == (3, 6) and ((0 <= share) & (share <= 1 + 1e-5)).all()


def test_neuron_grid_averages_by_digit_pair(trained):
    model = trained[0]
    tokens = _random(800, seed=19)
    grid = neurons.neuron_grid(model, tokens, 3, 2)
    _, cache = model.run_with_cache(tokens, names_filter=neurons.POST_HOOK)
    x, y = data.operands(tokens)
    mask = (x[:, 2] == 4) & (y[:, 2] == 7)
    assert grid.shape == (256, 10, 10) and torch.allclose(grid[:, 4, 7], cache[neurons.POST_HOOK][mask, 14].mean(0), atol=1e-5)
    assert len(neurons.classify_neurons(model, tokens)) == 256
    assert neurons.effective_weights(model).shape == (3, 10, 256)
    top2, random_top2 = neurons.embedding_spectrum(model, n_random=20)
    assert 0 < top2 <= 1 and random_top2.shape == (20,)


def test_mlp_sweeps_end_at_the_full_model(trained):
    model = trained[0]
    tokens, reference = _random(300, seed=20), _random(300, seed=21)
    full = analysis.exact_match(model, tokens).float().mean().item()
    kept, ranking = neurons.neuron_sweep(model, tokens, reference, [0, 256])
    assert sorted(ranking.tolist()) == list(range(256)) and kept[1] == full and kept[0] < 0.1
    assert neurons.direction_sweep(model, tokens, reference, [256])[0] == pytest.approx(full, abs=0.01)


def test_patching_table_shape(trained):
    clean, corrupt, column = analysis.one_digit_pairs(300, seed=13)
    assert not torch.equal(clean, corrupt)
    assert ((data.operands(clean)[0] != data.operands(corrupt)[0]).sum(-1) == 1).all()
    table = analysis.patching_table(trained[0], clean, corrupt, column)
    assert table.shape == (3, 3) and ((table >= 0) & (table <= 1)).all()


def test_patch_head_agrees_with_the_patching_table(trained):
    model = trained[0]
    clean, corrupt, column = analysis.one_digit_pairs(200, seed=14)
    differs = data.answers(clean) != data.answers(corrupt)
    offset = column[:, None] - (torch.arange(6)[None] - 1)
    hits = torch.zeros(3, 3)
    for head in range(3):
        for k in range(6):
            got = analysis.patch_head(model, clean, corrupt, head, k)
            assert got.shape == (200,)
            flipped = (got == data.answers(corrupt)[:, k]) & differs[:, k]
            for o in range(3):
                hits[head, o] += (flipped & (offset[:, k] == o)).sum()
    counts = torch.tensor([(differs & (offset == o)).sum() for o in range(3)])
    assert torch.allclose(hits / counts, analysis.patching_table(model, clean, corrupt, column))
    unpatched = analysis.predict(model, clean)
    assert not torch.equal(torch.stack([analysis.patch_head(model, clean, corrupt, h, 4) for h in range(3)]),
                           unpatched[:, 4].expand(3, -1)), "patching must change some digits"


def _retrain(config):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return addmodel.train(config, progress=False)[0]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(os.environ.get("MI_COURSE_RETRAIN_ALL") != "1" and os.environ.get("MI_COURSE_RETRAIN_ADDITION") != "1",
                    reason="slow (1.5 minutes on an idle core, 10+ on a busy one): opt in with MI_COURSE_RETRAIN_ADDITION=1")
def test_retraining_reproduces_what_the_lesson_says_reproduces():
    """Retrain with the committed config (one thread; about 1.5 minutes on an idle core). The
    weights differ from the shipped ones on another machine (floating point), so this checks
    what lesson 7 states is shared by every run of the recipe: the accuracy, BA/UC1/US9 solved
    and cascades failing in order, every head mattering, and, where the heads take one offset
    each, the verdicts on the paper's claims."""
    model = _retrain(addmodel.AdditionConfig())
    acc = analysis.accuracy_by_category(model, _random(5000, seed=11))
    assert acc["all"] >= STATED_ACCURACY, acc
    random_questions = data.random_tokens(20_000, torch.Generator().manual_seed(0))
    suite = analysis.category_suite(300)
    run = analysis.run_summary(model, suite, random_questions[:2000], random_questions[2000:3000])
    rates = {k: analysis.Rate(*v) for k, v in run["rates"].items()}
    assert min(rates["BA"].p, rates["UC1"].p) >= 0.98 and rates["US9"].p >= 0.95, run
    assert rates["cascade2"].p > rates["cascade3"].p > rates["cascade4"].p and rates["cascade4"].high < rates["cascade2"].low, run
    assert max(run["deltas"]) < 0, run
    if run["claims"]:
        assert run["claims"][0]["holds"] and run["claims"][1]["accuracy"] < 0.5 and not run["claims"][2]["holds"], run


@pytest.mark.skipif(os.environ.get("MI_COURSE_RETRAIN_ALL") != "1", reason="slow (about 3 minutes): opt in with MI_COURSE_RETRAIN_ALL=1")
def test_retraining_the_two_layer_model_solves_cascades():
    model = _retrain(addmodel.AdditionConfig(n_layers=2))
    suite = {name: data.category_tokens(name, 100, seed=21) for name in data.CATEGORIES}
    assert min(analysis.suite_accuracy(model, suite).values()) >= 0.98
