"""Lesson 8's exercises answered by calling the course's own reference (each must earn 0), and
the visible examples' answers typed in (used as the wrong value where given); see
tests/submissions.py."""

BY_REFERENCE = {
    "ex1_induction_score": """
from mi_course.circuits import induction_score as score
return score(pattern, half)
""",
    "ex2_ablation": """
from mi_course import circuits as reference
return float(reference.ablated_losses(model, ids, [list(heads)], (ids.shape[1] - 1) // 2)[0, 1])
""",
    "ex3_ov_copying": """
from mi_course.circuits import ov_copying_score as copying
return copying(model, layer, head)
""",
    "ex4_composition": """
from mi_course.circuits import composition_score as score
return score(left, right)
""",
}

HARDCODED = {
    # the visible toy pattern's answer (an induction head, a same-token head, a BOS head), any leading dims
    "ex1_induction_score": "return torch.tensor([1.0, 0.0, 0.0]).expand(*pattern.shape[:-3], 3)",
    # the answer cell's example: no head ablated, then the 4 strongest induction heads
    "ex2_ablation": "return 3.7841975688934326 if not heads else 7.282045364379883",
    # the answer cell's table of all 8 heads of the toy model
    "ex3_ov_copying": "return {(0, 0): 0.13, (0, 1): 0.03, (0, 2): 0.1, (0, 3): 0.27, (1, 0): 0.49, (1, 1): 0.65, (1, 2): 0.41, (1, 3): 0.84}[(layer, head)]",
    # the answer cell's example: L0H1 (previous-token) with L1H1 (induction)
    "ex4_composition": "return 0.21087917685508728",
}
