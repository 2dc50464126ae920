"""``--scheduler`` / ``--workers``: where a streaming command computes its blocks."""

from __future__ import annotations

from typing import Annotated

import typer

SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="ADDRESS",
        help="Compute blocks on a running dask.distributed scheduler (tcp://HOST:8786); the raster must be "
        "readable from the workers (shared storage or a URL).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Compute blocks on a dask LocalCluster of N worker processes started for this job.",
    ),
]
