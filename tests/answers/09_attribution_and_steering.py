"""Lesson 9's answers for tests/test_lessons.py: per answer cell, the solution region replaced by a call
to the course's own reference (BY_REFERENCE, which must earn zero), or a visible example's answer typed
in (HARDCODED, which must fail the hidden tests)."""

BY_REFERENCE = {
    "ex1_attribution": """
from mi_course import attribution as _attr, patching as _pt
return _attr.residual_attribution(model, clean_ids, corrupted_ids, _pt.logit_diff_metric(correct_id, wrong_id))
""",
    "ex2_pearson": """
from mi_course.attribution import pearson as _pearson
return _pearson(a, b)
""",
    "ex3_function_vector": """
from mi_course import attribution as _attr, steering as _st
return _st.function_vector(model, _attr.head_inputs(model, ids).mean(1), fv_heads)
""",
    "ex4_add_vector": """
from mi_course.steering import steered_logits as _steered
return _steered(model, ids, vector, layer)
""",
    "ex5_steering_effect": """
from mi_course import steering as _st
return _st.steering_effect(model, ids, vector, layer, word_ids, n_controls, seed)
""",
}

HARDCODED = {
    # The printed correlation of the visible example, typed in.
    "ex2_pearson": "return 0.662",
}
