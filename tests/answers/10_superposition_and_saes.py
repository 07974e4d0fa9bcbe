"""Lesson 10's exercises answered by calling the course's own reference (each must earn 0); see
tests/submissions.py. Every exercise is a function checked on hidden inputs, so none has a
HARDCODED answer."""

BY_REFERENCE = {
    "ex1_toy_loss": """
from mi_course.superposition import importance_loss as weighted
return weighted(x, x_hat, importance)
""",
    "ex2_sae_forward": """
from mi_course.saes import sae_loss as forward_and_loss
return forward_and_loss(sae, x, l1_coeff)
""",
    "ex3_variance": """
from mi_course.saes import variance_explained as fve
return fve(x, x_hat)
""",
    "ex4_spliced": """
from mi_course.saes import spliced_losses as losses
return losses(model, ids, sae, LAYER)[1]
""",
    "ex5_steer": """
from mi_course.saes import steered_probability as steered
return steered(model, ids, vector, LAYER, DIGITS)
""",
}

HARDCODED = {}
