"""Lesson 7: a 1-layer transformer trained to add 5-digit numbers, and its reverse engineering.

``data`` (questions, tokens, sub-task labels), ``model`` (build, train, checkpoints),
``analysis`` (accuracy by category, attention staircase, head ablation, patching, logit lens).
"""
