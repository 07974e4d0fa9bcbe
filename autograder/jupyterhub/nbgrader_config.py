# Global nbgrader configuration of every single-user server on the course's
# JupyterHub (students and instructors): the images copy it to
# /etc/jupyter/nbgrader_config.py. See README.md in this folder.
import os

c = get_config()  # noqa: F821

# The course id must equal c.CourseDirectory.course_id in autograder/nbgrader_config.py
# (a test checks it); the Assignment List shows the course under this name.
c.CourseDirectory.course_id = "mi-course"

# nbgrader's file exchange: one volume mounted at this path in every server
# (jupyterhub_config.py mounts it; a test checks the two paths agree). It must
# exist and be writable by everyone (chmod 777): nbgrader then keeps released
# lessons in mi-course/outbound/ and submissions in mi-course/inbound/, a folder
# students can write into but not list.
c.Exchange.root = "/srv/nbgrader/exchange"

# nbgrader's docs strongly recommend a log file on JupyterHub; one per user, in the home volume.
c.NbGrader.logfile = os.path.join(os.path.expanduser("~"), ".nbgrader.log")

# Instructors only: the hub sets MI_COURSE_ROOT to the instructor's checkout of
# the course repository (the course volume). The formgrader then works on the
# course's own configuration (solutions/ as the source, lessons/ as the release
# folder), with the gradebook at an absolute path so that it does not depend on
# the folder a server or terminal was started in. These are the folders that
# `mi-course autograde/feedback/export` use by default (the checkout's .nbgrader/),
# so the formgrader shows their results for manual grading (a test checks it).
_course = os.environ.get("MI_COURSE_ROOT", "")
if _course and os.path.isfile(os.path.join(_course, "autograder", "nbgrader_config.py")):
    load_subconfig(os.path.join(_course, "autograder", "nbgrader_config.py"))  # noqa: F821
    c.CourseDirectory.root = _course
    # .nbgrader/ is git-ignored, so a fresh clone lacks it, and sqlite creates no folders.
    os.makedirs(os.path.join(_course, ".nbgrader"), exist_ok=True)
    c.CourseDirectory.db_url = "sqlite:///" + os.path.join(_course, ".nbgrader", "gradebook.db")
