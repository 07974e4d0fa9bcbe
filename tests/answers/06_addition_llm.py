"""Lesson 6's exercises answered by calling the course's own reference (imported under an alias),
and the visible example's answer typed in: each must earn no points (see tests/submissions.py)."""

BY_REFERENCE = {
    "ex1_read_answer": """
from mi_course.addition.prompts import read_answer as ra
return ra(continuation)
""",
    "ex2_accuracy": """
from mi_course.addition.prompts import exact_match_prompts as em
return sum(em(model, prompt_list)) / len(prompt_list)
""",
    "ex3_digit_targets": """
from mi_course.addition.prompts import digit_targets as dt
return dt(model, text, answer)
""",
    "ex4_first_layers": """
from mi_course import lens as L
resid = L.residuals_hooks(model, ids)[:, 0]
return [L.first_top_layer(L.answer_ranks(L.lens_logits(model, resid[:, q]), t)) for t, q in zip(targets, positions)]
""",
    "ex5_attribution": """
from mi_course.lens import component_outputs as co, direct_logit_attribution as dla
parts = co(model, ids)
direction = hf.lm_head.weight[target] - hf.lm_head.weight[DIGITS].mean(0)
final = parts["final"][0, position]
return dla(model, parts["attn"][:, 0, position], final, direction), dla(model, parts["mlp"][:, 0, position], final, direction)
""",
    "ex6_hypotheses": """
from mi_course.addition.prompts import interchange_hypotheses as ih
return ih(base, source, operand)
""",
    "ex7_interchange": """
from mi_course.addition.prompts import interchange_rows as ir
return ir(model, [(b, s, position) for b, s in zip(base_texts, source_texts)], layer, component)
""",
    "ex8_follow_rates": """
from mi_course.addition.prompts import follow_rates as fr
return fr(model, pairs, operand, position, layers, component)
""",
    "ex9_head_patch": """
from mi_course.addition.prompts import patch_digit_probs as pdp
return pdp(model, base_texts, source_texts, [layer], [position], heads=range(model.config.num_attention_heads))[0]
""",
    "ex10_operator_rates": """
from mi_course.addition.prompts import operator_rates as orr
return orr(model, pairs, layer, groups)
""",
}

HARDCODED = {
    "ex1_read_answer": 'return {" 385;": 385, "47": 47}.get(continuation)',
    "ex2_accuracy": "return 0.4",
    "ex4_first_layers": "return [30, 25, 25]",
    "ex6_hypotheses": 'return {"base": 4, "operand": 8, "result": 7, "copied": 5}',
}
