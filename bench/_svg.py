"""A horizontal bar chart as a small SVG file, for docs/performance.md.

No plotting library: the benchmarks' plots are a few bars, and an SVG the
benchmark writes itself is reviewable as text and needs no extra install.
Each row is one stack's runs: the bar is their median, the whisker spans
the lowest to the highest run, and each run is a dot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

Row = tuple[str, Sequence[float]]
Section = tuple[str, Sequence[Row]]

WIDTH = 760
LABEL = 190  # the label column
RIGHT = 90  # room for the median's value after the longest bar
ROW = 26
HEAD = 24  # a section's heading
COLOURS = ("#2a6fb0", "#7aa9d6", "#c9782f", "#9a9a9a", "#5b9e5b", "#b05a9e")


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _nice_step(top: float) -> float:
    """A round tick step that gives four to eight ticks up to ``top``."""
    raw = top / 5 if top > 0 else 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def bar_chart(
    title: str, unit: str, sections: Sequence[Section], note: str = ""
) -> str:
    """The chart as SVG text; ``sections`` share one axis in ``unit``."""
    top = max((v for _, rows in sections for _, vals in rows for v in vals), default=1)
    step = _nice_step(top)
    axis_max = step * math.ceil(top / step) or step
    plot = WIDTH - LABEL - RIGHT

    def x(value: float) -> float:
        return LABEL + plot * value / axis_max

    parts: list[str] = []
    y = 40.0
    colours: dict[str, str] = {}
    for heading, rows in sections:
        if heading:
            parts.append(
                f'<text x="{LABEL}" y="{y + 15:.0f}" class="h">{escape(heading)}</text>'
            )
            y += HEAD
        for label, values in rows:
            colour = colours.setdefault(label, COLOURS[len(colours) % len(COLOURS)])
            mid = y + ROW / 2
            if values:
                median = _median(values)
                width = x(median) - LABEL
                parts.append(
                    f'<rect x="{LABEL}" y="{y + 4:.1f}" width="{width:.1f}" '
                    f'height="{ROW - 8}" fill="{colour}"/>'
                )
                lo, hi = min(values), max(values)
                parts.append(
                    f'<line x1="{x(lo):.1f}" y1="{mid:.1f}" x2="{x(hi):.1f}" '
                    f'y2="{mid:.1f}" class="w"/>'
                )
                parts.extend(
                    f'<circle cx="{x(v):.1f}" cy="{mid:.1f}" r="2.2" class="d"/>'
                    for v in values
                )
                parts.append(
                    f'<text x="{max(x(hi), x(median)) + 6:.1f}" y="{mid + 4:.1f}">'
                    f"{_number(median)}</text>"
                )
            parts.append(
                f'<text x="{LABEL - 8}" y="{mid + 4:.1f}" text-anchor="end">'
                f"{escape(label)}</text>"
            )
            y += ROW
        y += 6
    bottom = y
    ticks = []
    value = 0.0
    while value <= axis_max + step / 2:
        ticks.append(
            f'<line x1="{x(value):.1f}" y1="40" x2="{x(value):.1f}" y2="{bottom:.0f}" '
            f'class="g"/><text x="{x(value):.1f}" y="{bottom + 16:.0f}" '
            f'text-anchor="middle">{_number(value)}</text>'
        )
        value += step
    height = bottom + 44 + (16 if note else 0)
    caption = (
        f'<text x="{LABEL + plot / 2:.0f}" y="{bottom + 34:.0f}" '
        f'text-anchor="middle">{escape(unit)}</text>'
    )
    footer = (
        f'<text x="10" y="{height - 8:.0f}" class="n">{escape(note)}</text>'
        if note
        else ""
    )
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
            f'height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" '
            'font-family="sans-serif" font-size="12">',
            "<style>.h{font-weight:bold}.g{stroke:#ddd}.w{stroke:#333}"
            ".d{fill:#000}.n{font-size:10px;fill:#555}.t{font-size:14px;"
            "font-weight:bold}</style>",
            f'<rect width="{WIDTH}" height="{height:.0f}" fill="#fff"/>',
            f'<text x="10" y="22" class="t">{escape(title)}</text>',
            *ticks,
            *parts,
            caption,
            footer,
            "</svg>",
            "",
        ]
    )
