"""What a student's feedback may show of the tests: their name, points and failure message.

nbgrader renders feedback from the autograded notebook, where every test cell
holds its hidden tests (restored from the gradebook) and failures carry full
tracebacks that quote the failing line. ``HideTests`` (the first of
``GenerateFeedback``'s preprocessors, see ``config.nbgrader_config``) rewrites a
copy: a test cell's ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``
block becomes one comment line, and each error output of a test cell keeps only
``<exception>: <message>``. The autograded notebook itself (the instructor's
record, in the formgrader) is not changed.
"""

from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor

HIDDEN = re.compile(r"^[ \t]*#+[ \t]*BEGIN HIDDEN TESTS.*?(^[ \t]*#+[ \t]*END HIDDEN TESTS[^\n]*$|\Z)",
                    re.MULTILINE | re.DOTALL)
PLACEHOLDER = "# (hidden tests: not shown)"


def _is_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


class HideTests(NbGraderPreprocessor):
    """Hidden test code out of the feedback; test failures as their one-line message."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and _is_test(cell):
            cell.source = HIDDEN.sub(PLACEHOLDER, cell.source)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources
