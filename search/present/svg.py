"""Charts as inline SVG: the report must open with no network, so it draws its own axes and marks.

Colours are not set here: every mark carries a CSS class (`c0`..`c6`, `cg`) that the page maps to
the Okabe-Ito palette for light and dark backgrounds, and every series also has its own marker
shape, so no reader depends on telling colours apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 18, 14, 58


@dataclass(frozen=True)
class Mark:
    """One point. `tip` is the hover text (lines separated by newlines); `x_high` draws a bar to it."""

    x: float
    y: float
    tip: str
    key: str = ""
    x_high: float | None = None


@dataclass(frozen=True)
class Series:
    """Points drawn alike. `line` joins them: "step" (a Pareto front's staircase) or "line"."""

    label: str
    colour: str
    marker: str
    marks: list[Mark] = field(default_factory=list)
    line: str | None = None
    size: float = 4.5
    focusable: bool = True


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) from at most low to at least high."""
    if not high > low:
        low, high = low - 1.0, high + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _decimals(ticks: list[float]) -> int:
    """The fewest decimals that write every tick exactly."""
    return next((d for d in range(7) if all(abs(round(t, d) - t) < 1e-9 for t in ticks)), 6)


def marker_path(shape: str, x: float, y: float, r: float) -> str:
    """SVG path data of a marker centred on (x, y) with radius about r."""
    if shape == "circle":
        return f"M{x - r:.1f},{y:.1f}a{r:.1f},{r:.1f} 0 1,0 {2 * r:.1f},0a{r:.1f},{r:.1f} 0 1,0 {-2 * r:.1f},0Z"
    if shape == "square":
        s = r * 0.9
        return f"M{x - s:.1f},{y - s:.1f}h{2 * s:.1f}v{2 * s:.1f}h{-2 * s:.1f}Z"
    if shape == "diamond":
        s = r * 1.25
        return f"M{x:.1f},{y - s:.1f}L{x + s:.1f},{y:.1f}L{x:.1f},{y + s:.1f}L{x - s:.1f},{y:.1f}Z"
    if shape == "triangle":
        s = r * 1.3
        return f"M{x:.1f},{y - s:.1f}L{x + s:.1f},{y + s * 0.75:.1f}L{x - s:.1f},{y + s * 0.75:.1f}Z"
    if shape == "star":
        points = []
        for i in range(10):
            radius = r * (2.0 if i % 2 == 0 else 0.85)
            angle = math.pi / 2 + i * math.pi / 5
            points.append(f"{x + radius * math.cos(angle):.1f},{y - radius * math.sin(angle):.1f}")
        return "M" + "L".join(points) + "Z"
    raise ValueError(f"unknown marker shape '{shape}'")


def legend(series: list[Series]) -> str:
    """The chart's legend as HTML: each series' marker, in its colour, and its label."""
    items = []
    for s in series:
        radius = 3.6 if s.marker == "star" else 4.5
        swatch = (f'<svg width="18" height="18" viewBox="0 0 18 18" aria-hidden="true">'
                  f'<path class="{s.colour}" d="{marker_path(s.marker, 9, 9, radius)}"/></svg>')
        items.append(f"<li>{swatch}{escape(s.label)}</li>")
    return f'<ul class="legend">{"".join(items)}</ul>'


def chart(series: list[Series], *, x_label: str, y_label: str, title: str, x_from_zero: bool = False,
          y_bounds: tuple[float, float] | None = None, size: tuple[int, int] = (760, 440)) -> str:
    """A scatter chart of the series (drawn in order, later on top), with gridlines and labelled axes.

    The y axis never leaves `y_bounds` (a percentage's 0 and 100) for the sake of a margin.
    """
    marks = [m for s in series for m in s.marks]
    if not marks:
        return f'<p class="empty">{escape(title)}: nothing to plot yet.</p>'
    xs = [m.x for m in marks] + [m.x_high for m in marks if m.x_high is not None]
    ys = [m.y for m in marks]
    x_pad, y_pad = 0.05 * ((max(xs) - min(xs)) or max(xs) or 1.0), 0.05 * ((max(ys) - min(ys)) or 1.0)
    x_ticks = nice_ticks(0.0 if x_from_zero else min(xs) - x_pad, max(xs) + x_pad)
    y_low, y_high = min(ys) - y_pad, max(ys) + y_pad
    if y_bounds:
        y_low, y_high = max(y_low, y_bounds[0]), min(y_high, y_bounds[1])
    y_ticks = nice_ticks(y_low, y_high)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    width, height = size
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def py(y: float) -> float:
        return _TOP + (1.0 - (y - y0) / ((y1 - y0) or 1.0)) * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" style="max-width: {width * 1.2:.0f}px" '
             f'role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>"]
    x_dec, y_dec = _decimals(x_ticks), _decimals(y_ticks)
    for t in x_ticks:
        parts.append(f'<line class="grid" x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{_TOP}" y2="{_TOP + plot_h}"/>'
                     f'<text class="tick" x="{px(t):.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">'
                     f"{t:.{x_dec}f}</text>")
    for t in y_ticks:
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>'
                     f'<text class="tick" x="{_LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.{y_dec}f}</text>')
    parts.append(f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"/>')
    parts.append(f'<text class="axis" x="{_LEFT + plot_w / 2:.1f}" y="{height - 14}" text-anchor="middle">'
                 f"{escape(x_label)}</text>")
    parts.append(f'<text class="axis" transform="translate(16,{_TOP + plot_h / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for s in series:
        parts.append(f'<g class="series {s.colour}" data-series="{escape(s.label)}">')
        ordered = sorted(s.marks, key=lambda m: m.x)
        if s.line and len(ordered) > 1:
            path = [f"M{px(ordered[0].x):.1f},{py(ordered[0].y):.1f}"]
            for m in ordered[1:]:
                if s.line == "step":
                    path.append(f"H{px(m.x):.1f}")
                path.append(f"L{px(m.x):.1f},{py(m.y):.1f}")
            parts.append(f'<path class="link" d="{"".join(path)}"/>')
        for m in s.marks:
            if m.x_high is not None and m.x_high > m.x:
                parts.append(f'<line class="whisker" x1="{px(m.x):.1f}" x2="{px(m.x_high):.1f}" '
                             f'y1="{py(m.y):.1f}" y2="{py(m.y):.1f}"/>')
        for m in s.marks:
            focus = ' tabindex="0"' if s.focusable else ""
            parts.append(f'<path class="mark" d="{marker_path(s.marker, px(m.x), py(m.y), s.size)}" '
                         f'data-key="{escape(m.key)}" data-tip="{escape(m.tip)}" aria-label="{escape(m.tip)}"'
                         f"{focus}/>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
