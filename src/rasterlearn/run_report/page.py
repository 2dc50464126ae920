"""The run report page: :func:`write_run_report` puts the sections together into ``OUT/report.html``."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

from rasterlearn import report
from rasterlearn.diagnostics import collapse_warnings, headline
from rasterlearn.run_report.inputs import ReportInputs, class_schema, load_json
from rasterlearn.run_report.sections import (
    data_section,
    features_section,
    maps_section,
    metrics_section,
    outputs_section,
    params_section,
    sample_section,
    training_section,
)

log = logging.getLogger("rasterlearn.run_report")  # one logger for the package, as before the split


def write_run_report(out: str | Path, inputs: ReportInputs) -> Path:
    """Write ``out/report.html`` (figures embedded) and its figures as PNGs in ``out/report/``."""
    out = Path(out)
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    dataset = load_json(inputs.dataset / "dataset.json" if inputs.dataset else None)
    schema = class_schema(inputs, dataset)
    sections: list[tuple[str, str]] = []
    headline, evals = metrics_section(inputs, figs)
    train_metrics = load_json(inputs.train_dir / "metrics.json" if inputs.train_dir else None) or {}
    warnings = [str(w) for w in train_metrics.get("warnings") or []]
    for label, m in evals[1:] if train_metrics else evals:
        warnings += [f"{label}: {w}" for w in collapse_warnings(m, label)]
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        sections.append(("Warnings", f"<ul class='warn'>{items}</ul>"))
    summary = _headline(evals)
    if summary:
        sections.append(("Summary", summary))
    comparison = (train_metrics.get("comparison") or {}).get("table")
    if comparison:
        sections.append(
            (
                "Network vs per-pixel random forest baseline (same chips, same split)",
                report.table_html(comparison),
            )
        )
    maps = maps_section(inputs, figs, schema, dataset)
    if maps:
        sections.append(("Predicted maps", maps))
    data = data_section(inputs, figs, dataset, schema)
    if data:
        sections.append(("Data", data))
    training = training_section(inputs, figs)
    if training:
        sections.append(("Training", training))
    if headline:
        sections.append(("Metrics", headline))
    samples = sample_section(inputs, figs, schema, dataset)
    if samples:
        sections.append(("Sample chips: input · truth · prediction", samples))
    feats = features_section(inputs, figs)
    if feats:
        sections.append(("Features: embedding, PCA, clusters, similarity", feats))
    outs = outputs_section(out, inputs)
    if outs:
        sections.append(("Outputs", outs))
    sections.append(("Run parameters and versions", params_section(inputs)))
    path = report.html_page(inputs.title, sections, out / "report.html", note=inputs.note)
    log.info("Run report: %s (figures in %s)", path, figs)
    return path


def _headline(evals: list[tuple[str, dict[str, Any]]]) -> str:
    if not evals:
        return ""
    items = "".join(f"<li><b>{html.escape(label)}</b>: {html.escape(headline(m))}</li>" for label, m in evals)
    return f"<ul>{items}</ul>"
