"""An executed notebook (a lesson someone ran) as one HTML file that works offline.

nbconvert's ``lab`` template (JupyterLab's look) with what needs a network taken out:
plotly figures, which nbconvert cannot show, are drawn from their JSON with plotly.js
inlined once (``grading.feedback.PlotlyFigures``, as in feedback pages); no require.js,
MathJax, mermaid or widget script is loaded from a CDN (formulas show as the TeX written).
The notebook's own HTML outputs are kept as they are (it is the reader's own run).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from bs4 import BeautifulSoup
from jinja2 import DictLoader

TEMPLATE = "mi_course_offline.html.j2"
OFFLINE = DictLoader({TEMPLATE: """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
"""})


def notebook_html(nb: nbformat.NotebookNode) -> str:
    """The page of ``nb`` (a notebook with outputs): one file, nothing fetched to show it."""
    from nbconvert import HTMLExporter

    from mi_course.grading.feedback import PlotlyFigures

    exporter = HTMLExporter(template_name="lab", template_file=TEMPLATE, extra_loaders=[OFFLINE])
    exporter.register_preprocessor(PlotlyFigures(), enabled=True)
    page, _ = exporter.from_notebook_node(nb)
    return page


def remote_references(page: str) -> list[str]:
    """Addresses on other servers that ``page`` loads (scripts, styles, frames, images); [] when it works offline."""
    soup = BeautifulSoup(page, "html.parser")
    found = [el.get(attr) for tag, attr in (("script", "src"), ("link", "href"), ("iframe", "src"), ("img", "src"))
             for el in soup.find_all(tag) if el.get(attr)]
    return [url for url in found if url.strip().lower().startswith(("http:", "https:", "//"))]


def export_html(notebook: Path, to: Path | None = None) -> tuple[Path, list[str]]:
    """Write ``notebook`` as HTML to ``to`` (default: next to it, ``.html``); return the file and what it
    still loads from other servers (e.g. an output's own ``<img src="https://...">``)."""
    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    if not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"):
        raise ValueError(f"{notebook} has no outputs: run it first (in Jupyter: Run All, then save; or "
                         f"jupyter nbconvert --to notebook --execute --inplace {notebook})")
    page = notebook_html(nb)
    to = Path(to) if to else notebook.with_suffix(".html")
    to.write_text(page, encoding="utf-8")
    return to, remote_references(page)
