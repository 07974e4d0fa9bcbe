# Lets `nbgrader ...` run by hand from the repository root: the course's
# configuration lives in autograder/nbgrader_config.py.
import os

load_subconfig(os.path.join("autograder", "nbgrader_config.py"))  # noqa: F821

# MI_COURSE_WORK=DIR: the work folder of `mi-course autograde --work DIR` instead of .nbgrader/, so that
# the formgrader (`MI_COURSE_WORK=grading ./course.sh lab`) and nbgrader by hand use its gradebook and copies.
if os.environ.get("MI_COURSE_WORK"):
    _work = os.path.abspath(os.environ["MI_COURSE_WORK"])
    c = get_config()  # noqa: F821
    c.CourseDirectory.submitted_directory = os.path.join(_work, "submitted")
    c.CourseDirectory.autograded_directory = os.path.join(_work, "autograded")
    c.CourseDirectory.feedback_directory = os.path.join(_work, "feedback")
    c.CourseDirectory.db_url = "sqlite:///" + os.path.join(_work, "gradebook.db")
