"""Rendering of a report's blocks: Markdown, one standalone HTML page (figures inlined), and the metrics CSV.

A block is a tuple: ``("h1"|"h2"|"h3", text)``, ``("p", text)``, ``("table", header, rows)`` or
``("fig", stem, caption)``. Both renderers walk the same list, so Markdown and HTML always say the same.
"""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path


def render_markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + rest[0], ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "table":
            header, rows = rest
            cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
            lines += ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows] + [""]
        elif kind == "fig":
            lines += [f"![{rest[1]}](figures/{rest[0]}.png)", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{border-bottom:2px solid #1f77b4;padding-bottom:.2em}
h2{margin-top:1.8em;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.8em 0;font-size:.9em;
display:block;overflow-x:auto}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f0f4f8}td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}"""


def render_html(blocks: list[tuple], figs: dict[str, Path]) -> str:
    esc = html.escape
    parts = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{esc(rest[0])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{esc(str(h))}</th>" for h in rest[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in rest[1]
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "fig":
            data = base64.b64encode(figs[rest[0]].read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{esc(rest[1])}">'
                f"<figcaption>{esc(rest[1])}</figcaption></figure>"
            )
    title = "xlqa evaluation report"
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )


def write_csv(runs: list, datasets: list, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(
            [
                "run",
                "dataset",
                "language",
                "rules",
                "n",
                "em",
                "f1",
                "em_ci_low",
                "em_ci_high",
                "f1_ci_low",
                "f1_ci_high",
            ]
        )
        for r in runs:
            for d in (r.datasets[x.name] for x in datasets if x.name in r.datasets):
                w.writerow(
                    [
                        r.name,
                        d.name,
                        d.language,
                        d.rules,
                        len(d.scores),
                        *(f"{v:.4f}" for v in (d.em_ci[0], d.f1_ci[0], *d.em_ci[1:], *d.f1_ci[1:])),
                    ]
                )
    return path
