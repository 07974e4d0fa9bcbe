"""HTML a student's code produced, made inert for a page someone else opens (their feedback,
an instructor's browser): an allowlist of tags and attributes, no scripts, no event handlers,
no ``javascript:`` links, no styles that could cover the page, no requests to other servers.

``safe_html`` keeps what notebooks show (text formatting, tables such as pandas', lists,
``<details>``, code, images embedded as ``data:image/...``); elements that run code or embed
other documents go with their content; other unknown tags are dropped, their text kept; a remote
image becomes its alt text. ``inert_svg`` shows an SVG as an ``<img>`` of a ``data:`` URI, which
browsers draw without running its scripts or loading anything.

Sanitizing costs time (about 30 kB/s on a busy 2-core machine, quadratic in nesting depth), and a
submission can print megabytes of HTML: ``Sanitizer`` gives one page a budget (``PAGE_BUDGET``
characters, ``MAX_TAGS`` tags and ``MAX_DEPTH`` levels of nesting per fragment); beyond it a fragment
is shown as escaped text, cut short.
"""

from __future__ import annotations

import base64
import html
import re

import bleach
from bleach.css_sanitizer import CSSSanitizer
from bleach.html5lib_shim import convert_entities
from bs4 import BeautifulSoup

TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details", "div",
        "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
        "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strong", "sub", "summary", "sup",
        "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul", "var"}
# Gone with everything inside them (their text is code or another document, not something to read).
DROPPED = ["script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "template", "noscript",
           "svg", "math", "canvas", "audio", "video", "link", "meta", "base", "form", "textarea", "select", "button",
           "title", "head"]
COMMON = {"class", "title", "style", "align"}
ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt", "width", "height"}, "td": {"colspan", "rowspan"},
              "th": {"colspan", "rowspan"}, "ol": {"start"}, "table": {"border"},
              **{f"h{i}": {"id"} for i in range(1, 7)}}
IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml)[;,]")
LINK = re.compile(r"(https?:|mailto:|#)")
# Classes of the page's own CSS (bootstrap) that take an element out of the flow, e.g. over the grader's notes.
PLACED = re.compile(r"fixed|affix|modal|sticky|navbar|popover|tooltip|dropdown|backdrop", re.IGNORECASE)


def _normal(url: str) -> str:
    """``url`` as bleach reads it when it checks a protocol (entities decoded, no blanks or controls, lower case)."""
    url = re.sub(r"[`\000-\040\177-\240\s]+", "", convert_entities(url))
    return re.sub(r"[^\x00-\x7f]", "", url).lower()


def _allowed(tag: str, name: str, value: str) -> bool:
    if name == "src":  # only images inside the page: nothing fetched, no tracking of who opens it
        return tag == "img" and bool(IMAGE.match(_normal(value)))
    if name == "href":
        return bool(LINK.match(_normal(value)))
    if name == "class":
        return not PLACED.search(value)
    return name in COMMON or name in ATTRIBUTES.get(tag, ())


# No property that takes an element out of the flow (position), so nothing can cover the grader's notes.
CSS = CSSSanitizer(allowed_css_properties=["color", "background-color", "font-weight", "font-style", "font-size",
                                           "font-family", "text-align", "text-decoration", "vertical-align",
                                           "white-space", "width", "height", "max-width", "padding", "border",
                                           "border-collapse", "border-color", "display"])
CLEANER = bleach.Cleaner(tags=TAGS, attributes=_allowed, protocols={"http", "https", "mailto", "data"}, strip=True,
                         strip_comments=True, css_sanitizer=CSS)


PAGE_BUDGET = 500_000   # characters of HTML sanitized per page (about 15 s on a busy 2-core machine)
MAX_TAGS = 2_000        # tags in one fragment (a pandas table of 60 rows and 10 columns has about 700)
MAX_DEPTH = 100         # nesting (the course's own markdown: under 10)
SHOWN_AS_TEXT = 20_000  # characters of a fragment over the budget shown (escaped)
TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*?(/?)>")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


def _depth(fragment: str) -> int:
    """How deep the tags of ``fragment`` nest, read from the tags alone (linear time, no parsing)."""
    depth = deepest = 0
    for closing, name, empty in TAG.findall(fragment):
        if closing:
            depth = max(depth - 1, 0)
        elif not empty and name.lower() not in VOID:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


class Sanitizer:
    """``safe_html`` with a budget for one page: a fragment over it is shown as escaped text."""

    def __init__(self, budget: int = PAGE_BUDGET):
        self.budget = budget

    def __call__(self, fragment: str) -> str:
        if len(fragment) > self.budget or fragment.count("<") > MAX_TAGS or _depth(fragment) > MAX_DEPTH:
            more = len(fragment) - SHOWN_AS_TEXT
            return (f"<pre>(HTML too large to show here: {len(fragment):,} characters; as text)\n"
                    f"{html.escape(fragment[:SHOWN_AS_TEXT])}{f' [... {more:,} more]' if more > 0 else ''}</pre>")
        self.budget -= len(fragment)
        return safe_html(fragment)


def safe_html(fragment: str) -> str:
    """``fragment`` (HTML a student's code or markdown produced) with only inert markup left (no size limit:
    see ``Sanitizer``)."""
    soup = BeautifulSoup(fragment, "html.parser")
    for element in soup.find_all(DROPPED):
        element.decompose()
    for img in soup.find_all("img"):
        if not IMAGE.match(_normal(img.get("src") or "")):
            img.replace_with(f"[{img.get('alt') or 'image'}]")
    return CLEANER.clean(str(soup))


def inert_svg(svg: str) -> str:
    """An SVG document shown as an image (browsers run no script and load nothing for an ``<img>``)."""
    return (f'<img src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}" '
            'alt="SVG figure">')
