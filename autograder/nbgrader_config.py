# nbgrader configuration of the course. `mi-course` loads this file and adds
# the paths of each run (course root, gradebook); running `nbgrader` by hand
# from the repository root works too through the root's nbgrader_config.py.
c = get_config()  # noqa: F821

c.CourseDirectory.course_id = "mi-course"
# nbgrader's folders mapped onto the repository's layout.
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "lessons"
# Everything else lives in a git-ignored working folder.
c.CourseDirectory.submitted_directory = ".nbgrader/submitted"
c.CourseDirectory.autograded_directory = ".nbgrader/autograded"
c.CourseDirectory.feedback_directory = ".nbgrader/feedback"
c.CourseDirectory.db_url = "sqlite:///.nbgrader/gradebook.db"

# Lessons load a model: give cells time (the first load prepares it, ~25 s).
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# Released notebooks carry no outputs; the instructor's solutions may.
c.ClearOutput.enabled = True

# Feedback, also when nbgrader (or the formgrader) makes it by hand: never the hidden tests; a
# note at each cell the grader restored; what the student's code displayed made inert (no scripts);
# plotly figures drawn offline; "awaiting manual grading" instead of a score for answers no one
# graded yet; a held submission said to be held (mi_course/grading/feedback.py).
c.GenerateFeedback.preprocessors = [
    "mi_course.grading.feedback.HideTests",
    "nbgrader.preprocessors.GetGrades",
    "mi_course.grading.feedback.GraderNotes",
    "mi_course.grading.feedback.SafeOutputs",
    "mi_course.grading.feedback.PlotlyFigures",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.GenerateFeedback.exporter_class = "mi_course.grading.feedback.FeedbackExporter"
