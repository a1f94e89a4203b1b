"""Reading the audit's HTML report in tests: plots, URLs, tags, text by element id, labelled tables."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

URL_ATTRIBUTES = {
    "src",
    "href",
    "xlink:href",
    "srcset",
    "action",
    "poster",
    "data",
    "formaction",
    "background",
}
FORBIDDEN_TAGS = {"script", "link", "img", "iframe", "object", "embed", "base", "audio", "video", "source"}


@dataclass
class Svg:
    attrs: dict[str, str]
    title: str | None = None
    first_child: str | None = None
    marks: int = 0
    texts: list[str] = field(default_factory=list)


@dataclass
class Figure:
    plot: str
    svgs: list[Svg] = field(default_factory=list)
    caption: str = ""


class Page(HTMLParser):
    """The parts of the report the tests look at: plots, URLs, tags, text by element id, tables."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: list[Figure] = []
        self.urls: list[tuple[str, str, str]] = []  # tag, attribute, value
        self.tags: set[str] = set()
        self.by_id: dict[str, str] = {}
        self.styles: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._svg: Svg | None = None
        self._in_title = self._in_caption = self._in_text = self._in_style = False
        self._ids: list[tuple[str, int, list[str]]] = []  # id, depth, text parts
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        for key, value in a.items():
            if key in URL_ATTRIBUTES:
                self.urls.append((tag, key, value))
        if tag == "figure" and "data-plot" in a:
            self.figures.append(Figure(a["data-plot"]))
        elif tag == "svg":
            self._svg = Svg(a)
            if self.figures:
                self.figures[-1].svgs.append(self._svg)
        elif self._svg is not None:
            if self._svg.first_child is None:
                self._svg.first_child = tag
            if tag in ("rect", "path", "circle") and "mark" in a.get("class", "").split():
                self._svg.marks += 1
            if tag == "title" and self._stack and self._stack[-1][0] == "svg":
                self._in_title = True
            if tag == "text":
                self._in_text = True
                self._svg.texts.append("")
        if tag == "figcaption":
            self._in_caption = True
        if tag == "style":
            self._in_style = True
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []
        if tag == "br" and self._cell is not None:
            self._cell.append(" ")
        if "id" in a:
            self._ids.append((a["id"], len(self._stack), []))
        if tag not in ("br", "meta", "line", "input", "hr"):
            self._stack.append((tag, a))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "meta", "line", "input", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None
        if tag == "title":
            self._in_title = False
        if tag == "text":
            self._in_text = False
        if tag == "figcaption":
            self._in_caption = False
        if tag == "style":
            self._in_style = False
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None and self.tables:
            self.tables[-1].append(self._row)
            self._row = None
        if self._stack and self._stack[-1][0] == tag:
            self._stack.pop()
            while self._ids and self._ids[-1][1] >= len(self._stack):
                ident, _, parts = self._ids.pop()
                self.by_id[ident] = " ".join("".join(parts).split())

    def handle_data(self, data: str) -> None:
        for _, _, parts in self._ids:
            parts.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_style:
            self.styles.append(data)
        if self._svg is not None:
            if self._in_title:
                self._svg.title = (self._svg.title or "") + data
            if self._in_text:
                self._svg.texts[-1] += data
        if self._in_caption and self.figures:
            self.figures[-1].caption += data

    def table_after(self, heading_fragment: str, text: str) -> list[list[str]]:
        """The first table whose region label contains ``heading_fragment`` (our tables are labelled)."""
        index = [m.start() for m in re.finditer(r'<div class="table-wrap"[^>]*aria-label="([^"]*)"', text)]
        labels = re.findall(r'<div class="table-wrap"[^>]*aria-label="([^"]*)"', text)
        for i, label in enumerate(labels):
            if heading_fragment in label:
                assert len(index) == len(self.tables)
                return self.tables[i]
        raise AssertionError(f"no table labelled {heading_fragment!r}")
