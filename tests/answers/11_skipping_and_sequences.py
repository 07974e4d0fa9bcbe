"""Lesson 11 answered by calling the course's own references (``BY_REFERENCE``, each must earn 0
on its exercise). The exercises are functions checked on unseen inputs, so no typed-in answer
(``HARDCODED``) would pass their visible checks either; the suite's wrong values cover them."""

BY_REFERENCE = {
    "ex1_forward": """
        from mi_course.truncation import forward_through as fwd
        return fwd(model, ids, layers)
        """,
    "ex2_truncation": """
        from mi_course.truncation import truncated_logits as tl
        return lens.answer_rank(tl(model, ids), answers.expand(N + 1, -1))
        """,
    "ex3_ablate_each": """
        from mi_course.truncation import ablation_drops as drops
        return drops(model, ids, answers, heads)
        """,
}

HARDCODED = {}
