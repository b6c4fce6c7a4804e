"""Render the report's sections as a self-contained HTML page and as Markdown.

The HTML has inline CSS and every figure embedded as a base64 `data:` URI, so the one file can be
mailed or opened offline; it links to nothing. The Markdown links the PNG files beside it by
relative path. Both come from the same `Section` list, so they show the same cells.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skillfactory.report.collect import Run
from skillfactory.report.figures import Figure
from skillfactory.report.tables import Table


@dataclass
class Notes:
    """A bulleted list of plain-text lines (what is missing, what was skipped)."""

    lines: list[str]


Block = Table | Figure | Notes | str
"""A section's content: a table, a figure, a list of notes or a paragraph."""


@dataclass
class Section:
    """A titled part of the report."""

    title: str
    blocks: list[Block] = field(default_factory=list)


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f5f8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .source, .note { font-size: 0.8em; color: #555; }
ul.notes { font-size: 0.85em; color: #8a4b00; }
"""


def write_html(path: Path, title: str, sections: Sequence[Section]) -> None:
    """The report as one self-contained HTML file."""
    body = [f"<h1>{_h(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{_h(section.title)}</h2>")
        body += [_html_block(block) for block in section.blocks]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_h(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    path.write_text(page, encoding="utf-8")


def write_markdown(path: Path, title: str, sections: Sequence[Section]) -> None:
    """The report as Markdown, linking its figures by path relative to `path`."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += [*_markdown_block(block, path.parent), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def sources_line(runs: Sequence[Run]) -> str:
    """Which runs and specs a table was computed from."""
    return "Source: " + "; ".join(run.provenance() for run in runs) if runs else ""


def _html_block(block: Block) -> str:
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{_h(block.title)}">'
            f"<figcaption>{_h(block.caption)}</figcaption></figure>"
        )
    if isinstance(block, Notes):
        items = "".join(f"<li>{_h(line)}</li>" for line in block.lines)
        return f'<ul class="notes">{items}</ul>'
    return f"<p>{_h(block)}</p>"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in table.columns)
    rows = "".join(
        "<tr>" + "".join(_html_cell(cell) for cell in row) + "</tr>" for row in table.rows
    )
    parts = [f"<h3>{_h(table.title)}</h3>", f"<table><tr>{head}</tr>{rows}</table>"]
    if table.note:
        parts.append(f'<p class="note">{_h(table.note)}</p>')
    if table.sources:
        parts.append(f'<p class="source">{_h(sources_line(table.sources))}</p>')
    return "\n".join(parts)


def _html_cell(cell: str) -> str:
    numeric = cell[:1].isdigit() or cell[:1] in "+-" and cell[1:2].isdigit()
    return f'<td class="num">{_h(cell)}</td>' if numeric else f"<td>{_h(cell)}</td>"


def _markdown_block(block: Block, base: Path) -> list[str]:
    if isinstance(block, Table):
        lines = [f"### {block.title}", ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
        lines.append("|" + "|".join("---" for _ in block.columns) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        if block.note:
            lines += ["", f"*{_md_text(block.note)}*"]
        if block.sources:
            lines += ["", _md_text(sources_line(block.sources))]
        return lines
    if isinstance(block, Figure):
        link = Path(os.path.relpath(block.path, base)).as_posix()
        return [f"![{_md_text(block.title)}]({link})", "", f"*{_md_text(block.caption)}*"]
    if isinstance(block, Notes):
        return [f"- {_md_text(line)}" for line in block.lines]
    return [_md_text(block)]


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _md_text(text: str) -> str:
    """Plain text safe in Markdown: HTML and emphasis characters escaped."""
    escaped = html.escape(text, quote=False)
    for char in "\\*_[]`":
        escaped = escaped.replace(char, "\\" + char)
    return escaped


def _h(text: str) -> str:
    return html.escape(text, quote=True)
