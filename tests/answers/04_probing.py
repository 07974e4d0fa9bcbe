"""Lesson 4's exercises answered by calling the course's own reference (imported under an alias),
and the visible example's answer typed in: each must earn no points (see tests/submissions.py)."""

BY_REFERENCE = {
    # No course function reads the last real token of any padding; the closest helper is right-padding only.
    "ex1_last_token": """
from mi_course.probing import last_positions as lp
return hidden[torch.arange(hidden.shape[0]), lp(attention_mask)]
""",
    "ex2_probe_by_layer": """
from mi_course.probing import accuracy_by_layer as abl
return abl(acts, labels, train_idx, test_idx, progress=False)
""",
    "ex3_control_task": """
from mi_course.probing import control_labels as cl
return cl(groups, n_classes, seed)
""",
    "ex4_selectivity": """
from mi_course.probing import accuracy_by_layer as abl, selectivity as sel
return sel(abl(acts, labels, train_idx, test_idx, progress=False), abl(acts, control, train_idx, test_idx, progress=False))
""",
    "ex5_steering": """
from mi_course.probing import steered_logits as sl
steered = sl(model, prompts, layer, direction, alpha, positions)
clean = sl(model, prompts, layer, direction, 0.0, positions)
return float(((steered[:, target_id] - steered[:, source_id]) - (clean[:, target_id] - clean[:, source_id])).mean())
""",
}

HARDCODED = {
    # the visible check's example (a's ones digit, layers 0-5) typed in
    "ex2_probe_by_layer": "return np.array([0.46, 0.78, 0.84, 0.96, 0.94, 0.94])",
}
