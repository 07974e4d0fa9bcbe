# Lets `nbgrader ...` run by hand from the repository root: the course's
# configuration lives in autograder/nbgrader_config.py.
import os

load_subconfig(os.path.join("autograder", "nbgrader_config.py"))  # noqa: F821
