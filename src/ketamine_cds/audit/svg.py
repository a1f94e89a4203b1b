"""A chart as data: shapes with their attributes and tooltips, drawn by the report template's ``svg`` macro.

Chart code places shapes and never writes markup: every attribute value and text goes through the template's
automatic escaping, so a ward named ``<script>`` is drawn as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INK, MUTED, GRID, WHITE = "#1b1f24", "#4a5561", "#d5dbe1", "#ffffff"
TICK, LABEL, WIDTH = 13.0, 14.0, 480  # type sizes in SVG units; a 480-unit chart is 3/4 size on a phone


@dataclass(frozen=True)
class Shape:
    tag: str  # line, rect, circle, path, polyline, text
    attrs: tuple[tuple[str, str], ...]
    text: str = ""  # the content of a <text>
    tip: str = ""  # a <title> child: the tooltip and its accessible name


def _f(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


@dataclass
class Chart:
    """An SVG with a title (its first child), an accessible label and a caption elsewhere on the page."""

    id: str
    width: float
    height: float
    title: str
    label: str
    shapes: list[Shape] = field(default_factory=list)

    def add(self, tag: str, attrs: dict[str, str], text: str = "", tip: str = "") -> None:
        self.shapes.append(Shape(tag, tuple(attrs.items()), text, tip))

    def line(
        self, x1: float, y1: float, x2: float, y2: float, stroke: str = GRID, width: float = 1, dash: str = ""
    ) -> None:
        attrs = {"x1": _f(x1), "y1": _f(y1), "x2": _f(x2), "y2": _f(y2), "stroke": stroke}
        if width != 1:
            attrs["stroke-width"] = f"{width:g}"
        if dash:
            attrs["stroke-dasharray"] = dash
        self.add("line", attrs)

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        fill: str,
        tip: str = "",
        *,
        mark: bool = True,
        stroke: str = "",
        dash: str = "",
        css: str = "",
    ) -> None:
        attrs = {"x": _f(x, 2), "y": _f(y, 2), "width": _f(max(w, 0), 2), "height": _f(max(h, 0), 2)}
        classes = " ".join(c for c in ("mark" if mark else "", css) if c)
        if classes:
            attrs = {"class": classes, **attrs}
        attrs["fill"] = fill
        if stroke:
            attrs["stroke"] = stroke
        if dash:
            attrs["stroke-dasharray"] = dash
        self.add("rect", attrs, tip=tip)

    def circle(self, cx: float, cy: float, r: float, fill: str, tip: str, css: str = "mark") -> None:
        self.add(
            "circle", {"class": css, "cx": _f(cx, 2), "cy": _f(cy, 2), "r": f"{r:g}", "fill": fill}, tip=tip
        )

    def diamond(self, cx: float, cy: float, r: float, fill: str, tip: str, css: str = "mark") -> None:
        d = f"M{cx:.2f} {cy - r:.2f}L{cx + r:.2f} {cy:.2f}L{cx:.2f} {cy + r:.2f}L{cx - r:.2f} {cy:.2f}Z"
        self.add("path", {"class": css, "d": d, "fill": fill, "stroke": INK, "stroke-width": "0.8"}, tip=tip)

    def polyline(self, points: list[tuple[float, float]], stroke: str, width: float = 1.5) -> None:
        if len(points) < 2:
            return
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.add(
            "polyline", {"points": coords, "fill": "none", "stroke": stroke, "stroke-width": f"{width:g}"}
        )

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        anchor: str = "start",
        size: float = 12,
        fill: str = "",
        weight: str = "",
        rotate: bool = False,
    ) -> None:
        attrs = {"x": _f(x), "y": _f(y), "text-anchor": anchor, "font-size": f"{size:g}"}
        if fill:
            attrs["fill"] = fill
        if weight:
            attrs["font-weight"] = weight
        if rotate:
            attrs["transform"] = f"rotate(-90 {x:.1f} {y:.1f})"
        self.add("text", attrs, text=text)

    def empty(self, message: str, height: float | None = None) -> None:
        """A dashed frame and a message on a white ground (drawn over grid and limit lines)."""
        h = self.height if height is None else height
        box = text_width(message, 14) + 20
        self.rect(0.5, 0.5, self.width - 1, h - 1, "none", mark=False, stroke=GRID, dash="4 4")
        self.rect((self.width - box) / 2, h / 2 - 30, box, 28, WHITE, mark=False)
        self.text(self.width / 2, h / 2 - 11, message, anchor="middle", size=14, fill=MUTED)


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Roughly how wide a line of proportional text is (good enough to lay out labels)."""
    return len(text) * size * (0.6 if bold else 0.55)


def chars(width: float, size: float, bold: bool = False) -> int:
    return max(8, int(width / (size * (0.6 if bold else 0.55))))


def wrap(text: str, limit: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > limit:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return [line if len(line) <= limit else line[: limit - 1] + "…" for line in lines] or [""]


def nice_ticks(top: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values from 0 to at least ``top`` (whole numbers only for counts)."""
    import math

    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    ticks = [0.0]
    while ticks[-1] < top - 1e-9:
        ticks.append(ticks[-1] + step)
    return ticks
