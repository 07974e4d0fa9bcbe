"""Running the decoder layers by hand: the model rebuilt from its parts, truncated after its first
``k`` layers, with chosen layers left out, as attention-only or MLP-only stacks, and the heads whose
direct output raises the next item of a sequence (successor heads).

A decoder-only model is ``logits = unembed(final_norm(layer_{n-1}(... layer_0(embed(ids)))))``.
:func:`forward_through` writes that loop out over any list of layers (``range(k)`` truncates,
leaving indices out skips them), reading every part through :mod:`mi_course.architecture`, so the
same code runs on Llama, Qwen2, Gemma, GPT-2 and GPT-NeoX. Run over every layer, it must equal the
model's own logits: the check to make before trusting any result of a rebuilt model.

Shapes: ``ids`` ``[batch, pos]``; residuals ``[batch, pos, d_model]``; logits ``[batch, pos, vocab]``
(or ``[batch, vocab]`` where only the last position is read).
"""

from __future__ import annotations

import torch

from mi_course import architecture, lens
from mi_course.ablation import head_dim
from mi_course.activations import hooks

# Defined in file: solutions/11_skipping_and_sequences/11_skipping_and_sequences.ipynb


def embed(model, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream before layer 0: ``[batch, pos]`` -> ``[batch, pos, d_model]``.

    Token embeddings (Gemma's module scales them by ``sqrt(d_model)`` itself), plus GPT-2's learned
    position embeddings; rotary models add positions inside attention instead.
    """
    hf = model.hf
    x = architecture.get(hf, "model.embed_tokens")(ids)
    if architecture.positions(hf) == "learned":
        x = x + architecture.backbone(hf).wpe(torch.arange(ids.shape[1], device=ids.device))[None]
    return x


def causal_mask(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Additive causal mask ``[1, 1, n, n]``: 0 where query ``q`` may read key ``k <= q``, ``-inf`` above."""
    return torch.full((n, n), float("-inf"), dtype=dtype, device=device).triu(1)[None, None]


def run_layer(model, layer: int, x: torch.Tensor) -> torch.Tensor:
    """Decoder layer ``layer`` alone on the residual ``x`` ``[batch, pos, d_model]`` (positions ``0..pos-1``,
    causal), returning its output residual ``[batch, pos, d_model]``."""
    n = x.shape[1]
    positions = torch.arange(n, device=x.device)[None]
    return architecture.call_layer(model.hf, layer, x, causal_mask(n, x.dtype, x.device), positions, None)


def forward_through(model, ids: torch.Tensor, layers=None) -> torch.Tensor:
    """Logits ``[batch, pos, vocab]`` of the model run by hand through ``layers`` (indices, in that order;
    default all): embedding, each listed decoder layer, final norm, unembedding.

    ``range(k)`` is the model truncated after its first ``k`` layers; a list with indices left out
    skips those layers (their output is their input); all layers give the model's own logits.
    """
    x = embed(model, ids)
    for layer in range(model.n_layers) if layers is None else layers:
        x = run_layer(model, int(layer), x)
    return lens.lens_logits(model, x)


def truncated_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Last-position logits of every truncation: ``[n_layers + 1, batch, vocab]``, row ``k`` the model
    with only its first ``k`` layers (row 0: embedding, final norm, unembedding; row ``n_layers``: the model).

    One ordinary forward suffices: layers ``k..`` do not change the residual that layer ``k`` reads, so
    truncating after ``k`` layers is the final norm and unembedding of the residual after layer ``k - 1``
    (the logit lens with the final norm, at the last position).
    """
    return lens.lens_logits(model, lens.residuals_hooks(model, ids)[:, :, -1])


def smallest_k(ranks: torch.Tensor) -> list[int | None]:
    """For ranks ``[n_layers + 1, tasks]`` of the truncations (row ``k``: the first ``k`` layers), the
    smallest ``k`` whose truncated model has each task's answer on top (rank 0), or ``None``."""
    found = []
    for column in ranks.T:
        right = (column == 0).nonzero()
        found.append(int(right[0]) if len(right) else None)
    return found


def stack_runs(n_layers: int) -> dict[str, list[tuple[int, str]]]:
    """The skips of :func:`mi_course.skipping.skip_logits` that make the attention-only model (every MLP
    skipped) and the MLP-only model (every attention sublayer skipped)."""
    return {"attention only": [(l, "mlp") for l in range(n_layers)],
            "MLP only": [(l, "attn") for l in range(n_layers)]}


def contiguous_ranges(n_layers: int, width: int) -> list[list[int]]:
    """Every run of ``width`` consecutive layers: ``[[0..width-1], [1..width], ...]``."""
    return [list(range(start, start + width)) for start in range(n_layers - width + 1)]


def skip_set_logits(model, ids: torch.Tensor, sets) -> torch.Tensor:
    """Last-position logits ``[len(sets), batch, vocab]``, run ``r`` with every layer in ``sets[r]`` skipped
    (its output is its input), the others run by hand.

    A run equals the ordinary forward below its lowest skipped layer, so it starts from the model's own
    residual there and only the layers above are computed; all runs go through a layer together.
    Equals :func:`forward_through` without those layers, and :func:`mi_course.skipping.skip_logits`
    with ``"block"`` skips.
    """
    sets = [set(int(l) for l in s) for s in sets]
    n, batch = model.n_layers, ids.shape[0]
    stream = lens.residuals_hooks(model, ids)                        # [n + 1, batch, pos, d_model]
    start = [min(s) if s else n for s in sets]
    x = torch.cat([stream[s] for s in start])                        # [runs * batch, pos, d_model]
    for layer in range(min(start, default=n), n):
        rows = [r * batch + b for r, s in enumerate(sets) if start[r] <= layer and layer not in s for b in range(batch)]
        if rows:
            x[rows] = run_layer(model, layer, x[rows])
    return lens.lens_logits(model, x[:, -1]).reshape(len(sets), batch, -1)


def sublayer_norms(layer) -> list[torch.nn.Module]:
    """The norms inside a decoder layer, in order: before attention, then before the MLP
    (``input_layernorm`` / ``post_attention_layernorm``; GPT-2's ``ln_1`` / ``ln_2``)."""
    return [m for m in layer.children() if "Norm" in type(m).__name__]


def without_normalization(model, ids: torch.Tensor, norms) -> torch.Tensor:
    """Last-position logits ``[batch, vocab]`` with each norm in ``norms`` reduced to its gain (and bias): its
    input ``x`` ``[..., d_model]`` becomes ``x * gain + bias`` instead of ``x / rms(x) * gain + bias`` (LayerNorm:
    no centring either). What the seed's "skip the layer norm" does on a model whose norm weights are folded
    into the next layer."""

    def gain_only(norm):
        return norm.register_forward_hook(lambda m, args, out: args[0] * architecture.norm_gain(m) + architecture.norm_bias(m))

    with hooks([gain_only(n) for n in norms]):
        return model.hf(ids, logits_to_keep=1).logits[:, -1]


def head_outputs(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What each attention head writes into the residual stream at the last position, and the final residual.

    Returns ``heads`` ``[n_layers, n_heads, batch, d_model]`` (head ``h``'s slice of the output projection's
    input times that projection's columns of ``h``; the projection's bias, if any, is left out) and
    ``final`` ``[batch, d_model]`` (the last layer's output, before the final norm).
    """
    n_heads, _, d_head = architecture.heads(model.config)
    layers = architecture.layers(model.hf)
    z, final = [], []
    handles = [architecture.out_proj(layer).register_forward_pre_hook(lambda m, args: z.append(args[0][:, -1]))
               for layer in layers]
    handles.append(layers[-1].register_forward_hook(lambda m, i, o: final.append(o[:, -1])))
    with hooks(handles):
        model.hf(ids, logits_to_keep=1)
    out = []
    for layer, zl in zip(layers, z):
        w = architecture.out_proj_weight(layer).reshape(-1, n_heads, d_head)   # [d_model, head, d_head]
        zh = zl.reshape(zl.shape[0], n_heads, d_head)                            # [batch, head, d_head]
        out.append(torch.einsum("bhe,dhe->hbd", zh, w))
    return torch.stack(out), final[0]


def head_logit_attribution(model, ids: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Direct logit attribution of every head to each prompt's answer: ``[n_layers, n_heads, batch]``.

    Each head's output at the last position through the final norm (its scale frozen at the actual
    forward's, :func:`mi_course.architecture.frozen_norm`) and the answer's unembedding row, minus the
    mean over the vocabulary (so a head that raises every token equally scores 0).
    """
    parts, final = head_outputs(model, ids)
    normed = architecture.frozen_norm(architecture.final_norm(model.hf), final)(parts)   # [L, H, batch, d_model]
    w_u = model.hf.lm_head.weight                                                         # [vocab, d_model]
    direction = w_u[answers] - w_u.mean(0)                                                # [batch, d_model]
    return (normed * direction).sum(-1)


def ablation_drops(model, ids: torch.Tensor, answers: torch.Tensor, heads) -> torch.Tensor:
    """Each ``(layer, head)`` of ``heads`` ablated *alone from the full model* (its output zeroed at the last
    position): the answer's logit in the full model minus with that head ablated, averaged over the prompts,
    ``[len(heads)]`` (positive: the head helped the answer). ``ids`` ``[batch, pos]``, ``answers`` ``[batch]``.

    As :func:`mi_course.ablation.ablate_heads`: the positions before the last run once and every ablated
    run reuses their keys and values, so each (prompt, head) costs one token.
    """
    heads, batch = [(int(l), int(h)) for l, h in heads], ids.shape[0]
    d_head, layers = head_dim(model), architecture.layers(model.hf)
    full = model.hf(ids, logits_to_keep=1).logits[:, -1].gather(1, answers[:, None])[:, 0]     # [batch]
    cache = model.hf(ids[:, :-1], use_cache=True).cache
    cache.batch_repeat_interleave(len(heads))                          # row b * len(heads) + i: prompt b, head i

    def ablate(layer):
        mine = [(i, h) for i, (l, h) in enumerate(heads) if l == layer]

        def hook(module, args):
            x = args[0].clone()                                        # [rows, 1, n_heads * d_head]
            for i, h in mine:
                x[i :: len(heads), :, h * d_head : (h + 1) * d_head] = 0.0
            return (x,)

        return hook

    handles = [architecture.out_proj(layers[l]).register_forward_pre_hook(ablate(l)) for l in {l for l, _ in heads}]
    with hooks(handles):                                               # the backbone's output is final-normed
        last = architecture.backbone(model.hf)(ids[:, -1:].repeat_interleave(len(heads), 0), cache=cache).last_hidden_state[:, -1]
    unembedding = model.hf.lm_head.weight[answers.repeat_interleave(len(heads))]       # only the answers' rows
    ablated = (last * unembedding).sum(-1).reshape(batch, len(heads))
    return (full[:, None] - ablated).mean(0)


def successor_scores(model, ids: torch.Tensor, nexts: torch.Tensor, currents: torch.Tensor) -> torch.Tensor:
    """Per head and prompt, how much more its direct output raises the next item of the sequence than the
    item the prompt ends on: :func:`head_logit_attribution` to ``nexts`` minus to ``currents`` (``[batch]``
    ids each), ``[n_layers, n_heads, batch]``. A head that copies the last item scores below 0, one that
    raises its successor above 0."""
    return head_logit_attribution(model, ids, nexts) - head_logit_attribution(model, ids, currents)


def continues(model, prompts: list[str], answers: list[str]) -> list[bool]:
    """Whether greedy decoding after each prompt writes its answer, every token of it (teacher-forced:
    each answer token is the top prediction given the prompt and the answer's earlier tokens). All prompts
    run as one batch, padded at the end; the unembedding is applied only where an answer token is predicted."""
    tok = model.tokenizer
    pieces = [(tok(p, add_special_tokens=False)["input_ids"], tok(a, add_special_tokens=False)["input_ids"])
              for p, a in zip(prompts, answers)]
    if not pieces:
        return []
    width = max(len(p) + len(a) for p, a in pieces)
    # padded at the end: in a causal model no real token sees the padding, and every token keeps its position
    ids = torch.tensor([p + a + [0] * (width - len(p) - len(a)) for p, a in pieces], device=model.device)
    hidden = architecture.backbone(model.hf)(ids).last_hidden_state                 # final-normed, [rows, width, d_model]
    rows = [r for r, (p, a) in enumerate(pieces) for _ in a]
    where = [len(p) - 1 + j for p, a in pieces for j in range(len(a))]              # the position predicting answer token j
    predicted = model.hf.lm_head(hidden[rows, where]).argmax(-1).tolist()
    targets = [t for _, a in pieces for t in a]
    result = [True] * len(pieces)
    for r, got, want in zip(rows, predicted, targets):
        result[r] = result[r] and got == want
    return result
