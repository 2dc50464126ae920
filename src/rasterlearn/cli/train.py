"""``rasterlearn train``, ``rasterlearn evaluate-model`` and ``rasterlearn models``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from rasterlearn.cli._app import app, console, state
from rasterlearn.cli._metrics import fmt, print_metrics
from rasterlearn.cli._options import (
    LoaderWorkersOpt,
    ProgressOpt,
    batch_size_option,
    config_file_option,
    device_option,
    former_spellings,
    out_folder_option,
    output_option,
    overwrite_option,
    seed_option,
)
from rasterlearn.cli._progress import progress_bar

_BatchSizeOpt = Annotated[int | None, batch_size_option("Chips per batch. (default: 8)")]
_OverwriteOpt = Annotated[bool, overwrite_option("Start again even if OUT has checkpoints.", negatable=False)]
_MetricsOutputOpt = Annotated[
    Path | None, output_option("Metrics JSON (CSV and confusion-matrix PNG are written beside it).")
]

# -- train's own options -------------------------------------------------------------------------------------
_ArchOpt = Annotated[
    str | None, typer.Option(help="Architecture (see 'rasterlearn models'). (default: unet)")
]
_EncoderOpt = Annotated[str | None, typer.Option(help="smp encoder or 'tu-<timm name>'. (default: resnet18)")]
_EpochsOpt = Annotated[int | None, typer.Option(help="Epochs; 0 = evaluate the model only. (default: 20)")]
_PretrainedOpt = Annotated[
    str | None,
    typer.Option(help="Pretrained encoder weights name, e.g. imagenet (downloads). Default: none."),
]
_WeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="Local weights: .safetensors/.pt/.ckpt or a model package "
        "folder (fine-tuning; with --epochs 0, evaluation)."
    ),
]
_ChannelStrategyOpt = Annotated[
    str | None,
    typer.Option(
        help="Adapting pretrained RGB first layers to other band counts: repeat, mean, zeros, random."
    ),
]
_TaskOpt = Annotated[str | None, typer.Option(help="multiclass (softmax) or binary (1 sigmoid output).")]
_TemporalOpt = Annotated[
    str | None,
    typer.Option(
        help="Multi-date chips: early (dates stacked as channels; default) or siamese (shared "
        "encoder per date, feature differencing)."
    ),
]
_LossOpt = Annotated[
    str | None,
    typer.Option(
        help="auto (ce+dice when imbalanced, else ce), ce, bce, dice, focal, jaccard, tversky, "
        "focal_tversky, lovasz; combine with +, e.g. 'ce+dice'. (default: auto)"
    ),
]
_ClassWeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="auto, none, inverse, inverse_sqrt, median (from the manifest's trn pixel counts). "
        "(default: auto)"
    ),
]
_SamplerOpt = Annotated[
    str | None,
    typer.Option(
        help="shuffle, or balanced (chips holding rare classes drawn more often). (default: shuffle)"
    ),
]
_BaselineOpt = Annotated[
    bool | None,
    typer.Option(
        "--baseline/--no-baseline",
        help="Fit a per-pixel random forest on the same chips and compare. (default: on)",
    ),
]
_FreezeEncoderEpochsOpt = Annotated[int | None, typer.Option(help="Train only the decoder for N epochs.")]
_MonitorOpt = Annotated[str | None, typer.Option(help="Metric for the best checkpoint. (default: val/miou)")]
_StrategyOpt = Annotated[
    str | None,
    typer.Option(help="Lightning strategy, e.g. ddp (one process per device; only rank 0 writes OUT)."),
]
_DeterministicOpt = Annotated[
    bool | None,
    typer.Option("--deterministic/--no-deterministic", help="Deterministic algorithms (slower)."),
]
_MlflowExperimentOpt = Annotated[
    str | None,
    typer.Option(
        help="MLflow experiment name (store: $MLFLOW_TRACKING_URI, else OUT/mlruns.db). "
        "(default: rasterlearn)"
    ),
]
_ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.ckpt.")]


@app.command(
    context_settings=former_spellings(out="output", workers="loader-workers", scheduler="lr-scheduler")
)
def train(
    dataset: Annotated[Path, typer.Argument(help="Chip folder written by 'rasterlearn chips'.")],
    out: Annotated[Path, out_folder_option("Output folder: model package + metrics + report.")],
    config: Annotated[Path | None, config_file_option("YAML file of training options.")] = None,
    arch: _ArchOpt = None,
    encoder: _EncoderOpt = None,
    epochs: _EpochsOpt = None,
    batch_size: _BatchSizeOpt = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate. (default: 1e-3)")] = None,
    pretrained: _PretrainedOpt = None,
    weights: _WeightsOpt = None,
    channel_strategy: _ChannelStrategyOpt = None,
    task: _TaskOpt = None,
    temporal: _TemporalOpt = None,
    loss: _LossOpt = None,
    class_weights: _ClassWeightsOpt = None,
    sampler: _SamplerOpt = None,
    baseline: _BaselineOpt = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw, adam, sgd.")] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--lr-scheduler", help="Learning-rate schedule: cosine, onecycle, plateau, step, none."),
    ] = None,
    augment: Annotated[str | None, typer.Option(help="none, flips, geometric, full.")] = None,
    freeze_encoder_epochs: _FreezeEncoderEpochsOpt = None,
    monitor: _MonitorOpt = None,
    patience: Annotated[int | None, typer.Option(help="Early stopping patience (epochs).")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, 32, bf16-mixed, 16-mixed.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu, gpu, mps.")] = None,
    devices: Annotated[str | None, typer.Option(help="Devices (e.g. 1, 2, auto).")] = None,
    strategy: _StrategyOpt = None,
    num_nodes: Annotated[int | None, typer.Option(help="Machines of a distributed run. (default: 1)")] = None,
    workers: LoaderWorkersOpt = None,
    seed: Annotated[int | None, seed_option("Random seed. (default: 42)")] = None,
    deterministic: _DeterministicOpt = None,
    logger: Annotated[str | None, typer.Option(help="csv, tensorboard, mlflow.")] = None,
    mlflow_experiment: _MlflowExperimentOpt = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    resume: _ResumeOpt = False,
    overwrite: _OverwriteOpt = False,
    progress: ProgressOpt = "bar",
) -> None:
    """Train a segmentation model on chips and write a self-describing model package into OUT."""
    from rasterlearn.train import load_train_config
    from rasterlearn.train import train as run_train

    dev: Any = devices
    if devices is not None and devices.isdigit():
        dev = int(devices)
    cfg = load_train_config(
        config,
        arch=arch,
        encoder=encoder,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        pretrained=pretrained,
        weights=weights,
        channel_strategy=channel_strategy,
        task=task,
        temporal=temporal,
        loss=loss,
        class_weights=class_weights,
        sampler=sampler,
        baseline=baseline,
        optimizer=optimizer,
        scheduler=scheduler,
        augment=augment,
        freeze_encoder_epochs=freeze_encoder_epochs,
        monitor=monitor,
        early_stopping_patience=patience,
        precision=precision,
        accelerator=accelerator,
        devices=dev,
        strategy=strategy,
        num_nodes=num_nodes,
        num_workers=workers,
        seed=seed,
        deterministic=deterministic,
        logger=logger,
        mlflow_experiment=mlflow_experiment,
        run_name=run_name,
    )
    bar = not state.get("quiet", False) and progress == "bar"  # Lightning draws its own bar
    with progress_bar("train", total=cfg.epochs, unit="epochs", display=False) as advance:
        result = run_train(
            dataset, out, cfg, resume=resume, overwrite=overwrite, progress_bar=bar, progress=advance
        )
    if not result.files:  # a DDP rank > 0: rank 0 wrote the package and prints the summary
        return
    m = result.metrics
    console.print(f"Model package: {out}/model.json (+ model.safetensors); report: {out}/report.html")
    print_metrics(m, f"validation ({cfg.val_split})")


@app.command("evaluate-model")
def evaluate_model_cmd(
    model: Annotated[Path, typer.Argument(help="Model package folder (model.json + model.safetensors).")],
    dataset: Annotated[Path, typer.Argument(help="Chip folder written by 'rasterlearn chips'.")],
    split: Annotated[
        Literal["trn", "val", "tst"], typer.Option(help="Split to score: trn, val or tst.")
    ] = "tst",
    output: _MetricsOutputOpt = None,
    batch_size: Annotated[int, batch_size_option("Chips per batch.")] = 8,
    device: Annotated[str | None, device_option("cpu, cuda, mps (default: cuda when available).")] = None,
    progress: ProgressOpt = "bar",
) -> None:
    """Score a model package on a split of a chip folder (per-class IoU/F1, producer's/user's accuracy, kappa)."""
    from rasterlearn.data import read_manifest
    from rasterlearn.train import evaluate_model

    n = len(read_manifest(dataset, split))
    with progress_bar(f"evaluating {split}", total=n, unit="chips") as advance:
        m = evaluate_model(
            model,
            dataset,
            split=split,
            out=output,
            batch_size=batch_size,
            device=device,
            progress=advance,
        )
    print_metrics(m, split)
    if output is None:
        typer.echo(json.dumps({k: m[k] for k in ("mean_iou", "overall_accuracy", "kappa")}, indent=2))
    else:
        console.print(f"Metrics written to {output} (+ .csv, _confusion.png)")


@app.command("compare", context_settings=former_spellings(out="output", workers="loader-workers"))
def compare_cmd(
    dataset: Annotated[Path, typer.Argument(help="Chip folder written by 'rasterlearn chips'.")],
    candidates: Annotated[
        str,
        typer.Option(
            help="Comma-separated: ARCH:ENCODER networks (e.g. unet:resnet18), rf:bands, rf:features."
        ),
    ],
    out: Annotated[Path, out_folder_option("Output folder: compare.csv/.json/.png.")],
    config: Annotated[
        Path | None, config_file_option("YAML file of training options for the networks.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of each network. (default: 20)")] = None,
    batch_size: _BatchSizeOpt = None,
    rf_samples: Annotated[int, typer.Option(help="Training pixels of each random forest.")] = 100_000,
    feature_model: Annotated[
        str, typer.Option(help="timm backbone of rf:features (pretrained only when cached).")
    ] = "resnet18.a1_in1k",
    workers: LoaderWorkersOpt = None,
    progress: ProgressOpt = "bar",
) -> None:
    """Train/fit each candidate on the same chips and split; one table (mIoU, IoU per class, kappa, time, size)."""
    from rich.table import Table

    from rasterlearn.compare import compare, parse_candidates
    from rasterlearn.train import load_train_config

    cands = parse_candidates(candidates)
    cfg = load_train_config(config, epochs=epochs, batch_size=batch_size, num_workers=workers)
    opts = cfg.model_dump(exclude_unset=True)
    with progress_bar("candidates", total=len(cands)) as advance:
        res = compare(
            dataset,
            candidates,
            out,
            train_options=opts,
            rf_samples=rf_samples,
            feature_model=feature_model,
            progress=advance,
        )
    table = Table(title="candidates on the same chips and split")
    for col in ("candidate", "split", "mIoU", "kappa", "seconds", "model MB"):
        table.add_column(col, justify="right")
    for r in res.rows:
        table.add_row(
            r["candidate"],
            r["split"],
            fmt(r["mean_iou"]),
            fmt(r["kappa"]),
            f"{r['seconds']:.1f}",
            f"{r['model_bytes'] / 2**20:.2f}",
        )
    console.print(table)
    console.print(f"Table: {res.files['csv']} (+ .json); plot: {res.files['plot']}")


@app.command("models")
def models_cmd() -> None:
    """List the registered segmentation architectures."""
    from rich.table import Table

    from rasterlearn.models import list_models, model_spec

    table = Table(title="architectures (encoders: smp names or tu-<timm model>)")
    for col in ("name", "min chip px", "multiple of", "description"):
        table.add_column(col)
    for name in list_models():
        s = model_spec(name)
        table.add_row(name, str(s.min_size), str(s.divisor), s.description)
    console.print(table)
