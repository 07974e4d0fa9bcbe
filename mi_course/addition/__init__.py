"""Addition, the course's project.

Lesson 6 (a pretrained LLM): ``prompts`` (few-shot prompts by category, answer reading
past the bare space, digit targets, greedy accuracy).

Lesson 7 (a 1-layer transformer trained to add 5-digit numbers): ``data`` (questions,
tokens, sub-task labels), ``model`` (build, train, checkpoints), ``analysis`` (accuracy
by category, attention staircase, head ablation, patching, logit lens).
"""
