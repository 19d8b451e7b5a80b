"""The demo's report: one self-contained HTML page (images inlined) and ``summary.json``.

The page opens offline in any browser: no script, no external style sheet or font, every image a
``data:`` URI. ``summary.json`` carries the same numbers for scripts.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1040px;
margin:2em auto;padding:0 1em;color:#1d2733;line-height:1.5}
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:2px solid #e3e8ee;padding-bottom:.2em}
.lead{color:#536171;font-size:1.1em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #d7dde4;padding:.3em .6em;text-align:right}
th{background:#f2f5f8}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e3e8ee}
figcaption{color:#536171;font-size:.9em}
.numbers{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.numbers div{background:#f2f5f8;border-radius:8px;padding:.6em 1em;min-width:9em}
.numbers b{display:block;font-size:1.5em}
.note{background:#fff8e1;border-left:4px solid #f2b400;padding:.5em 1em}
"""


class Report:
    """Blocks of HTML in order, and the summary's numbers."""

    def __init__(self, title: str, lead: str) -> None:
        self.title = title
        self.blocks: list[str] = [f"<h1>{html.escape(title)}</h1>", _p(lead, "lead")]
        self.summary: dict[str, Any] = {}

    def heading(self, text: str) -> None:
        """A section heading."""
        self.blocks.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, *, note: bool = False) -> None:
        """A paragraph (plain text, escaped)."""
        self.blocks.append(_p(text, "note" if note else None))

    def numbers(self, items: Sequence[tuple[str, str]]) -> None:
        """Headline figures as tiles: (value, label)."""
        tiles = "".join(
            f"<div><b>{html.escape(value)}</b>{html.escape(label)}</div>" for value, label in items
        )
        self.blocks.append(f'<div class="numbers">{tiles}</div>')

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table; floats are shown with three decimals."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        self.blocks.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(
        self, png: bytes, caption: str, *, alt: str | None = None, width: int | None = None
    ) -> None:
        """A PNG, inlined, with its caption (at most ``width`` CSS pixels wide)."""
        data = base64.b64encode(png).decode("ascii")
        size = f' style="width:{width}px"' if width else ""
        self.blocks.append(
            f'<figure><img src="data:image/png;base64,{data}"{size} '
            f'alt="{html.escape(alt or caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def html(self) -> str:
        """The whole page."""
        body = "\n".join(self.blocks)
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>"
        )

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``report.html`` and ``summary.json`` atomically; returns their paths."""
        page = _atomic(folder / "report.html", self.html())
        summary = _atomic(folder / "summary.json", json.dumps(self.summary, indent=2))
        return page, summary


def _p(text: str, css: str | None) -> str:
    cls = f' class="{css}"' if css else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    Path(tmp).replace(path)
    return path
