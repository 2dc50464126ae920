"""Figures and self-contained HTML pages (matplotlib, Agg backend; images embedded as base64).

Stages write their figures through these helpers so every report looks alike. Nothing here reads rasters.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["html_page", "img_tag", "plot_confusion_matrix", "save_figure", "table_html"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save and close a matplotlib figure (PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Two panels: counts and row-normalized (recall) matrices; rows = truth, columns = prediction."""
    plt = _plt()
    cm = np.asarray(cm, dtype="float64")
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(names)
    size = max(4.0, 0.6 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for ax, mat, label, fmt in ((axes[0], cm, "pixels", "{:.0f}"), (axes[1], norm, "row-normalized", "{:.2f}")):
        im = ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("truth")
        ax.set_title(f"{title} ({label})")
        top = mat.max() if mat.size else 0
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if top and mat[i, j] > 0.5 * top else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_figure(fig, path)


def img_tag(path: str | Path, alt: str = "", width: str | None = None) -> str:
    """An ``<img>`` with the PNG embedded, so the page is self-contained."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    style = f' style="max-width:{width}"' if width else ' style="max-width:100%"'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{style}>'


def table_html(rows: Sequence[dict[str, Any]], floatfmt: str = "{:.4f}") -> str:
    """A simple HTML table from a list of dicts (columns from the first row)."""
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{border-bottom:2px solid #2c7fb8}h2{color:#2c7fb8;margin-top:2rem}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;
text-align:right}th{background:#eef5fb}td:first-child,th:first-child{text-align:left}
.note{color:#666;font-size:.9rem}
"""


def html_page(title: str, sections: Sequence[tuple[str, str]], path: str | Path, note: str = "") -> Path:
    """Write a self-contained HTML page from ``(heading, html body)`` sections."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            + (f"<p class='note'>{html.escape(note)}</p>" if note else "") + "\n".join(parts) + "</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
