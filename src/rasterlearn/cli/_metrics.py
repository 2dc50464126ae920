"""The one console table of accuracy metrics (``evaluate``, ``train``, ``evaluate-model``)."""

from __future__ import annotations

from typing import Any

from rasterlearn.cli._app import console


def fmt(v: Any) -> str:
    """A metric with four decimals; ``n/a`` where it is undefined."""
    return "n/a" if v is None else f"{float(v):.4f}"


def print_metrics(metrics: dict[str, Any], title: str | None = None) -> None:
    """Per-class IoU, F1, user's and producer's accuracy (precision, recall) and pixels under the headline
    (:func:`rasterlearn.diagnostics.headline`), then the network-vs-baseline table when the metrics hold one."""
    from rich.table import Table

    from rasterlearn.diagnostics import headline

    head = headline(metrics)
    table = Table(title=f"{title}: {head}" if title else head)
    for col in ("class", "code", "IoU", "F1", "user's acc.", "producer's acc.", "pixels"):
        table.add_column(col, justify="right")
    for name, pc in metrics["per_class"].items():
        table.add_row(
            name,
            str(pc.get("code", "")),
            fmt(pc["iou"]),
            fmt(pc["f1"]),
            fmt(pc["users_accuracy"]),
            fmt(pc["producers_accuracy"]),
            f"{pc['support']:,}",
        )
    console.print(table)
    comp = (metrics.get("comparison") or {}).get("table") or (metrics.get("baseline") or {}).get("table")
    if comp:
        side = Table(title="network vs per-pixel random forest baseline")
        cols = ["split", "model", "mean IoU", "kappa"] + [c for c in comp[0] if c.startswith("IoU ")]
        for col in cols:
            side.add_column(col, justify="right")
        for row in comp:
            side.add_row(*[v if isinstance(v := row.get(c), str) else fmt(v) for c in cols])
        console.print(side)
