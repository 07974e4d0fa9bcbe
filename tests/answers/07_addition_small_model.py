"""Lesson 7's exercises answered by calling the course's own reference (each must earn 0), and
the visible examples' answers typed in (used as the wrong value where given); see
tests/submissions.py."""

BY_REFERENCE = {
    "ex1_labels": """
from mi_course.addition.data import column_labels as labels, make_tokens as question
return labels(question(x, y))
""",
    "ex2_loss": """
from mi_course.addition.model import answer_losses as losses
return losses(logits, tokens)
""",
    "ex3_task_loss": """
from mi_course.addition.model import task_digit_loss as per_task
return per_task(losses, tokens)
""",
    "ex4_exact": """
from mi_course.addition.analysis import exact_match as right
return right(model, tokens)
""",
    "ex5_columns": """
from mi_course.addition.analysis import attention_to_columns as columns
return columns(pattern)
""",
    "ex6_ablation": """
from mi_course.addition import analysis as an
means = an.mean_z(model, reference)
return an.exact_match(model, tokens, [an.ablation_hook(head, means[:, head])]).float().mean().item()
""",
    "ex7_deltas": """
from mi_course.addition.analysis import loss_deltas as deltas
return deltas(model, tokens)
""",
    "ex8_patch": """
from mi_course.addition.analysis import patch_head as patched
return patched(model, clean, corrupt, head, k)
""",
    "ex9_grid": """
from mi_course.addition.neurons import neuron_grid as grid
return grid(model, tokens, k, column)
""",
    "ex10_distance": """
from mi_course.addition.data import carry_distance as distance
return distance(tokens)
""",
}

HARDCODED = {
    # exact_match(model, examples) in the answer cell: 12345+33333 right, 555+445 and 44445+55555 wrong
    "ex4_exact": "return torch.tensor([True, False, False])",
    # mean_ablated_accuracy on the UC1 suite, the answer cell's example, is 0.0 for the heads that matter
    "ex6_ablation": "return 0.0",
    # the answer cell's example: 12345+33333 patched from 12375+33333, digits a3 and a4
    "ex8_patch": "return torch.tensor([{(0, 3): 6, (0, 4): 7, (1, 3): 6, (1, 4): 0, (2, 3): 7, (2, 4): 7}[(head, k)]])",
    # the exercise's example: 555 + 445 gives [1, 1, 3, 2, 1, 1]
    "ex10_distance": "return torch.tensor([[1, 1, 3, 2, 1, 1]] * len(tokens))",
}
