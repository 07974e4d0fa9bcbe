"""Lesson 5 answered by calling the course's own references (``BY_REFERENCE``, each must earn 0
on its exercise) and with the visible example's answer typed in (``HARDCODED``)."""

BY_REFERENCE = {
    "ex1_metric": [
        """
        from mi_course.patching import logit_diff as ld
        return ld(logits, correct_id, wrong_id)
        """,
        """
        from mi_course.patching import normalised as nm
        return nm(value, clean_value, corrupted_value)
        """,
    ],
    "ex2_patch_one": """
        from mi_course.patching import patch_residual_loop as p
        from mi_course.patching import logit_diff_metric as m
        return float(p(model, clean_ids, corrupted_ids, m(MARY, JOHN), [layer], [position])[0, 0])
        """,
    # No course function reads a heatmap: the course's answer sweeps the heatmap again with its
    # references and reads that (the whole of mi_course.patching is watched).
    "ex3_read_heatmap": """
        from mi_course import patching as p
        grid = p.normalised(p.patch_residual_cached(model, clean_ids, corrupted_ids, p.logit_diff_metric(MARY, JOHN), range(model.n_layers),
                                                    [FIRST, END]), clean_ld, corrupted_ld)
        return int((grid[:, -1] > 0.5).nonzero()[0]), int((grid[:, 0] > 0.5).nonzero()[-1])
        """,
    "ex4_pyvene": """
        from mi_course.patching import pyvene_patch as pv
        return pv(model, clean_ids, corrupted_ids, layer, "attention_output", position)
        """,
    "ex5_ablate_head": """
        from mi_course.ablation import ablate_heads as ab
        logits = ab(model, clean_ids, [(layer, head)])
        return float(logits[0, MARY] - logits[0, JOHN])
        """,
    "ex6_rank": """
        from mi_course.lens import answer_rank as r
        return int(r(logits, torch.tensor(answer_id)))
        """,
    "ex7_skip_mlp": """
        from mi_course.skipping import skip_logits as sk
        return sk(model, ids, [[(layer, "mlp")]])[0]
        """,
    # The course has no function for this answer; the closest is its metric, pt.logit_diff.
    "ex8_leading_space": """
        from mi_course.patching import logit_diff as ld
        ids = encode(model, prompt + " ")
        return float(ld(model.hf(ids).logits, token_id(model, correct.strip()), token_id(model, wrong.strip()))[0])
        """,
    # add_bos has no course reference (kept as written); bos_recovery by the course's sweep.
    "ex9_bos": [
        """
        return torch.cat([torch.full((ids.shape[0], 1), BOS, dtype=ids.dtype), ids], dim=1)
        """,
        """
        from mi_course.patching import logit_diff as ld, logit_diff_metric as m, normalised as nm, patch_residual_loop as p
        c, x = add_bos(clean_ids), add_bos(corrupted_ids)
        lds = [float(ld(model.hf(ids).logits, MARY, JOHN)[0]) for ids in (c, x)]
        return float(nm(p(model, c, x, m(MARY, JOHN), [layer], [position])[0, 0], *lds))
        """,
    ],
}

HARDCODED = {
    "ex3_read_heatmap": "return 23, 22",
    "ex6_rank": "return 0",
    "ex8_leading_space": "return 4.267520904541016",
}
