"""The course helpers on every supported architecture: tiny random models built from each family's
config (2 layers, d_model 64, 4 heads; grouped-query attention where the family has it) with the
embedded model's tokenizer, checked by invariants that hold for any weights. Offline, seconds each."""

import pytest
import torch
import transformers

from mi_course import ablation, activations, architecture, attribution, circuits, lens, probing, saes, skipping, steering
from mi_course import patching as pt
from mi_course.models import CourseModel, embedded_model_dir, load_model, prepare_embedded
from mi_course.tokens import encode

from conftest import CLEAN, CORRUPTED

SIZE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=128)
CONFIGS = {
    "llama": lambda v: transformers.LlamaConfig(vocab_size=v, num_key_value_heads=2, tie_word_embeddings=True, **SIZE),
    "gpt2": lambda v: transformers.GPT2Config(vocab_size=v, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                              bos_token_id=0, eos_token_id=0),
    "gpt_neox": lambda v: transformers.GPTNeoXConfig(vocab_size=v, **SIZE),
    "qwen2": lambda v: transformers.Qwen2Config(vocab_size=v, num_key_value_heads=2, **SIZE),
    "gemma": lambda v: transformers.GemmaConfig(vocab_size=v, num_key_value_heads=1, head_dim=16, **SIZE),
}
ATOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(prepare_embedded())


def tiny(family: str, tokenizer) -> CourseModel:
    torch.manual_seed(0)
    config = CONFIGS[family](len(tokenizer))
    hf = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # random norm gains and biases, so that no invariant holds by accident
        for name, p in hf.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0 if "bias" in name or family == "gemma" else 1.0, 0.1)
    return CourseModel.from_hf(hf, tokenizer, name=f"tiny-{family}", device="cpu")


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request, tokenizer):
    torch.set_grad_enabled(False)
    return tiny(request.param, tokenizer)


@pytest.fixture(scope="module")
def ids(model):
    return pt.prompt_pair(model, CLEAN, CORRUPTED)


def logits_of(model, ids):
    return model.hf(ids).logits


def test_nnsight_aliases_resolve(model, ids):
    lm, layers = model.nnsight, architecture.layers(model.hf)
    assert lm.model.layers[1]._module is layers[1]
    assert lm.model.layers[0].self_attn.o_proj._module is architecture.out_proj(layers[0])
    assert lm.model.layers[0].mlp._module is architecture.get(layers[0], "mlp")
    assert lm.model.embed_tokens._module is model.hf.get_input_embeddings()
    assert lm.model.norm._module is architecture.final_norm(model.hf)
    assert lm.lm_head._module is model.hf.get_output_embeddings()
    with lm.trace(ids[0]):
        z = lm.model.layers[1].self_attn.o_proj.input.save()
        out = lm.lm_head.output.save()
    n_heads, _, d_head = architecture.heads(model.config)
    assert z.shape == (1, ids[0].shape[1], n_heads * d_head)
    assert torch.allclose(out, logits_of(model, ids[0]), atol=ATOL)


def test_out_proj_weight_orientation(model):
    layer = architecture.layers(model.hf)[0]
    n_heads, _, d_head = architecture.heads(model.config)
    x = torch.randn(3, n_heads * d_head)
    bias = getattr(architecture.out_proj(layer), "bias", None)
    expected = architecture.out_proj(layer)(x) - (0 if bias is None else bias)
    assert architecture.out_proj_weight(layer).shape == (model.d_model, n_heads * d_head)
    assert torch.allclose(x @ architecture.out_proj_weight(layer).T, expected, atol=ATOL)


def test_logit_lens_last_layer_is_the_logits(model, ids):
    clean = ids[0]
    logits = logits_of(model, clean)
    resid = lens.residuals_hooks(model, clean)
    assert resid.shape == (model.n_layers + 1, 1, clean.shape[1], model.d_model)
    assert torch.allclose(lens.lens_logits(model, resid[-1]), logits, atol=ATOL)
    assert torch.allclose(lens.residuals_nnsight(model, clean), resid, atol=ATOL)
    assert torch.allclose(activations.residual_stream(model, clean), resid[1:, 0], atol=ATOL)
    hidden = model.hf(clean, output_hidden_states=True).hidden_states
    assert torch.allclose(lens.hidden_states_lens(model, hidden)[-1], logits[0, -1], atol=ATOL)
    assert torch.allclose(lens.hidden_states_lens(model, hidden)[:-1], lens.lens_logits(model, resid[:-1, 0, -1]),
                          atol=ATOL)


def test_components_sum_to_the_residual_and_attribution_to_the_logit_difference(model, ids):
    clean = ids[0]
    parts = lens.component_outputs(model, clean)
    total = parts["embed"] + parts["attn"].sum(0) + parts["mlp"].sum(0)
    assert torch.allclose(total, parts["final"], atol=ATOL)
    direction = lens.logit_direction(model, 5, 7)
    final = parts["final"][0, -1]
    stacked = torch.cat([parts["embed"][:, -1], parts["attn"][:, 0, -1], parts["mlp"][:, 0, -1]])
    dla = lens.direct_logit_attribution(model, stacked, final, direction)
    logits = logits_of(model, clean)[0, -1]
    bias = architecture.norm_bias(lens.final_norm(model))
    assert torch.allclose(dla.sum() + bias @ direction if torch.is_tensor(bias) else dla.sum(),
                          logits[5] - logits[7], atol=ATOL)


def test_attention_by_source_sums_to_the_attention_output(model, ids):
    clean = ids[0]
    by_source = lens.attention_by_source(model, clean, layer=1, pos=-1)
    attn = lens.component_outputs(model, clean)["attn"][1, 0, -1]
    bias = getattr(architecture.out_proj(architecture.layers(model.hf)[1]), "bias", None)
    assert torch.allclose(by_source.sum(0) + (0 if bias is None else bias), attn, atol=ATOL)


def test_attention_rows_sum_to_one(model, ids):
    patterns = activations.attention_patterns(model, ids[0])
    n_heads = architecture.heads(model.config)[0]
    assert patterns.shape == (model.n_layers, n_heads, ids[0].shape[1], ids[0].shape[1])
    assert torch.allclose(patterns.sum(-1), torch.ones(patterns.shape[:-1]), atol=ATOL)
    assert torch.allclose(circuits.attention_patterns(model, ids[0])[0], patterns, atol=ATOL)


def test_patching_clean_into_clean_changes_nothing(model, ids):
    clean = ids[0]
    logits = logits_of(model, clean)
    for component in pt.COMPONENTS:
        assert torch.allclose(pt.nnsight_patch(model, clean, clean, 1, component, 3), logits, atol=ATOL)
    diff = pt.logit_diff(logits, 5, 7)
    sweep = pt.patch_residual_loop(model, clean, clean, pt.logit_diff_metric(5, 7), [0, 1], [2, -1])
    assert torch.allclose(sweep, diff.expand(2, 2), atol=ATOL)
    by_layer = pt.patch_component_layers(model, clean, clean, pt.logit_diff_metric(5, 7), "attention_output", [2, 3])
    assert torch.allclose(by_layer, diff.expand(model.n_layers), atol=ATOL)


def test_cached_and_batched_sweeps_equal_the_loop(model, ids):
    clean, corrupted = ids
    layers, positions = [0, 1], list(range(7, clean.shape[1]))
    loop = pt.patch_residual_loop(model, clean, corrupted, pt.logit_diff_metric(5, 7), layers, positions)
    assert torch.allclose(pt.patch_residual_batched(model, clean, corrupted, pt.logit_diff_metric(5, 7), layers, positions, batch_size=3),
                          loop, atol=ATOL)
    assert torch.allclose(pt.patch_residual_cached(model, clean, corrupted, pt.logit_diff_metric(5, 7), layers, positions), loop, atol=ATOL)


def by_hand_ablation(model, ids, layer, head, value):
    """Last-position logits with ``(layer, head)``'s slice of the ``o_proj`` input at the last position set to ``value``."""
    d = ablation.head_dim(model)

    def hook(module, args):
        x = args[0].clone()
        x[:, -1, head * d:(head + 1) * d] = value
        return (x,)

    handle = architecture.out_proj(architecture.layers(model.hf)[layer]).register_forward_pre_hook(hook)
    try:
        return model.hf(ids).logits[:, -1]
    finally:
        handle.remove()


def test_head_ablation_equals_ablation_by_hand(model, ids):
    clean, corrupted = ids
    heads = [(0, 1), (1, 3)]
    own = ablation.mean_head_inputs(model, clean)  # a batch of one: the mean is the head's own output
    assert torch.allclose(ablation.ablate_heads(model, clean, heads, own), logits_of(model, clean)[:, -1].expand(2, -1),
                          atol=ATOL)
    mean = ablation.mean_head_inputs(model, torch.cat([clean, corrupted]))
    d = ablation.head_dim(model)
    ablated = ablation.ablate_heads(model, clean, heads, mean)
    for r, (layer, head) in enumerate(heads):
        want = by_hand_ablation(model, clean, layer, head, mean[layer, head * d:(head + 1) * d])
        assert torch.allclose(ablated[r], want[0], atol=ATOL)
    zeroed = ablation.ablate_heads(model, clean, heads)
    assert torch.allclose(zeroed[1], by_hand_ablation(model, clean, 1, 3, 0.0)[0], atol=ATOL)


def test_skipping_nothing_equals_the_model_and_everything_the_embedding_lens(model, ids):
    clean = ids[0]
    everything = [(layer, "block") for layer in range(model.n_layers)]
    out = skipping.skip_logits(model, clean, [[], everything])
    assert torch.allclose(out[0], logits_of(model, clean)[:, -1], atol=ATOL)
    embed = lens.residuals_hooks(model, clean)[0, :, -1]
    assert torch.allclose(out[1], lens.lens_logits(model, embed), atol=ATOL)


def test_steering_and_attribution(model, ids):
    clean, corrupted = ids
    zero = torch.zeros(model.d_model)
    assert torch.allclose(steering.steered_logits(model, clean, zero, 1), logits_of(model, clean)[:, -1], atol=ATOL)
    inputs = attribution.head_inputs(model, clean)[:, 0]  # [n_layers, d_model]
    d = ablation.head_dim(model)
    layer = architecture.layers(model.hf)[1]
    only = torch.zeros_like(inputs[1])
    only[2 * d:3 * d] = inputs[1, 2 * d:3 * d]
    assert torch.allclose(steering.function_vector(model, inputs, [(1, 2)]),
                          only @ architecture.out_proj_weight(layer).T, atol=ATOL)
    metric = pt.logit_diff_metric(5, 7)
    with torch.enable_grad():
        assert torch.allclose(attribution.residual_attribution(model, clean, clean, metric),
                              torch.zeros(model.n_layers, clean.shape[1]), atol=ATOL)
        per_head = attribution.head_attribution(model, clean, attribution.head_inputs(model, corrupted), metric)
    assert per_head.shape == (model.n_layers, architecture.heads(model.config)[0])


def test_probing_and_sae_activations_match_the_residual_stream(model):
    prompts = ["12 + 34 =", "The cat sat on the mat and"]
    acts = probing.collect_activations(model, prompts, progress=False)
    for i, prompt in enumerate(prompts):
        assert torch.allclose(acts[i], activations.residual_stream(model, prompt, -1), atol=ATOL)
    ids = encode(model, "The cat sat on the mat and")
    assert torch.allclose(saes.residuals(model.hf, ids, 0)[0], activations.residual_stream(model, ids)[0], atol=ATOL)


def test_steering_many_directions_equals_one_at_a_time(model):
    prompts, positions = probing.country_questions(model, "Italy")
    few, pos = prompts[:3], positions[:3]  # different lengths: a right-padded batch
    directions = torch.randn(2, model.d_model, generator=torch.Generator().manual_seed(0))
    many = probing.steered_logits_many(model, few, 0, directions, 3.0, pos)
    one = torch.stack([probing.steered_logits(model, few, 0, d, 3.0, pos) for d in directions])
    assert (many - one).abs().max() < ATOL


def test_parameter_groups_count_every_parameter_once(model):
    groups = activations.parameter_groups(model.hf)
    assert sum(groups.values()) == sum(p.numel() for p in model.hf.parameters())
    mlp, attn, share = activations.parameter_budget(model.hf)
    assert sum(mlp) == groups["MLP"] and sum(attn) == groups["attention"]


def test_an_unsupported_architecture_fails_at_load_time_naming_what_is_missing(tokenizer):
    config = transformers.OPTConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=1,
                                    num_attention_heads=4, ffn_dim=128, word_embed_proj_dim=64)
    hf = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(architecture.UnsupportedArchitectureError, match=r"model\.layers"):
        CourseModel.from_hf(hf, tokenizer)


def test_load_model_reads_a_saved_tiny_model(tmp_path, tokenizer):
    torch.set_grad_enabled(False)
    saved = tiny("gpt2", tokenizer)
    saved.hf.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.config.model_type == "gpt2" and loaded.n_layers == 2
    ids = encode(loaded, CLEAN)
    assert torch.allclose(loaded.hf(ids).logits, saved.hf(ids).logits, atol=ATOL)
    with loaded.nnsight.trace(ids):
        out = loaded.nnsight.model.layers[1].output.save()
    assert out.shape == (1, ids.shape[1], 64)
    assert embedded_model_dir().is_dir()


def test_pyvene_and_the_bridge_agree_with_nnsight_and_hooks(model, ids):
    clean, corrupted = ids
    for component in pt.COMPONENTS:
        assert torch.allclose(pt.pyvene_patch(model, clean, corrupted, 1, component, 9),
                              pt.nnsight_patch(model, clean, corrupted, 1, component, 9), atol=ATOL)
    assert torch.allclose(lens.residuals_bridge(model, clean), lens.residuals_hooks(model, clean), atol=ATOL)
