"""Lesson 3's exercises answered by calling the course's own reference (``BY_REFERENCE``) and
by typing in the visible example's answer (``HARDCODED``); each must earn 0 on its exercise.
See ``tests/submissions.py``."""

BY_REFERENCE = {
    "ex1_logit_lens": """
        from mi_course.lens import hidden_states_lens as hsl
        return hsl(model, hidden_states, pos=pos)
    """,
    "ex2_trajectory": """
        from mi_course.lens import answer_ranks as ranks_of
        return lens_logits.softmax(-1)[:, token], ranks_of(lens_logits, token)
    """,
    "ex3_first_top_layer": """
        from mi_course.lens import first_top_layer as ftl
        return ftl(ranks)
    """,
    # No course function appends the model's prediction; the closest: the lens grid's last row
    # (the model's own top token at the last position).
    "ex4_arithmetic": """
        from mi_course import lens as L
        prompt_ids = encode(model, prompt)
        top, _ = L.lens_grid(model, prompt_ids, [prompt_ids.shape[1] - 1])
        return torch.cat([prompt_ids, top[-1:].to(prompt_ids.device)], dim=1), token_id(model, str(number)[0])
    """,
    "ex5_hooks": """
        from mi_course.lens import residuals_hooks as rh
        return rh(model, ids)[:, 0]
    """,
    "ex6_nnsight": """
        from mi_course.lens import residuals_nnsight as rn
        return rn(model, ids)[:, 0]
    """,
    "ex7_components": """
        from mi_course.lens import component_outputs as co
        parts = co(model, ids)
        return parts["embed"][0, pos], parts["attn"][:, 0, pos], parts["mlp"][:, 0, pos]
    """,
    "ex8_dla": """
        from mi_course import lens as L
        return L.direct_logit_attribution(model, parts, final, L.logit_direction(model, answer, alternative))
    """,
    # No course function ranks components; the closest: recompute the capital prompt's attribution
    # with the course's references and rank it.
    "ex9_top_components": """
        from mi_course import lens as L
        parts = L.component_outputs(model, capital_ids)
        direction = L.logit_direction(model, capital_answer, token_id(model, " London"))
        values = L.direct_logit_attribution(model, torch.cat([parts["attn"], parts["mlp"]])[:, 0, -1], parts["final"][0, -1], direction)
        names = [f"attn {l}" for l in range(N_LAYERS)] + [f"mlp {l}" for l in range(N_LAYERS)]
        return [names[int(i)] for i in values.topk(k).indices]
    """,
}

HARDCODED = {
    "ex3_first_top_layer": "return 30",
    "ex4_arithmetic": """
        return torch.tensor([[33, 34, 34, 1232, 216, 33, 34, 37, 446, 216, 34, 36, 39, 43, 216, 33, 38, 33, 1232, 216,
                              34, 34, 36, 446, 216]], device=model.device), 35
    """,
    "ex9_top_components": 'return ["attn 23", "mlp 28", "mlp 23"]',
}
