"""Contracts that hold across stages: one binary decision, one validity policy, resume on more epochs,
progress events that count up to their announced total."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from rasterlearn.labels import ClassSchema
from rasterlearn.metrics import binary_foreground
from rasterlearn.models import ModelMetadata
from rasterlearn.normalize import Normalization

# -- one binary decision rule --------------------------------------------------------------------------

# foreground probabilities of the four columns blocks of the test image; 0.5 is exactly representable and
# sigmoid(logit(0.5)) == sigmoid(0) == 0.5 exactly, so those pixels sit exactly at the 0.5 threshold
PROBS = (0.2, 0.45, 0.5, 0.7)


class Logit(nn.Module):
    """sigmoid(output) is the input's first band: the image holds the foreground probability itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x[:, :1].clamp(1e-6, 1 - 1e-6))


def _prob_image() -> np.ndarray:
    img = np.zeros((1, 16, 16), dtype="float32")
    for k, p in enumerate(PROBS):
        img[0, :, 4 * k : 4 * k + 4] = p
    return img


def _binary_meta(threshold: float) -> ModelMetadata:
    return ModelMetadata(
        arch="unet",
        encoder="resnet18",
        in_channels=1,
        num_classes=1,
        task="binary",
        bands=["p"],
        normalization=Normalization.identity(1).to_dict(),
        schema=ClassSchema.binary().to_dict(),
        chip_size=16,
        threshold=threshold,
    )


class _OneChip:
    """The two methods of ``ChipDataset`` that the report samples use, over one in-memory chip."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img

    def __len__(self) -> int:
        return 1

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        valid = np.ones(self.img.shape[1:], bool)
        return self.img, valid, np.ones(self.img.shape[1:], "uint8")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(self.img), "mask": torch.ones(self.img.shape[1:], dtype=torch.long)}


@pytest.mark.parametrize("threshold", [0.5, 0.4])
def test_binary_decision_agrees_in_train_metrics_predict_and_report(make_raster, tmp_path, threshold):
    from rasterlearn.predict import predict_raster
    from rasterlearn.train import SegmentationModule, TrainConfig, _sample_predictions, evaluate_loader

    img = _prob_image()
    expect = img[0] >= threshold  # p == threshold is foreground
    assert expect.sum() == 16 * 4 * (2 if threshold == 0.5 else 3)
    assert np.array_equal(binary_foreground(img[0], threshold), expect)
    assert torch.equal(binary_foreground(torch.from_numpy(img[0]), threshold), torch.from_numpy(expect))

    # training: the LightningModule's decision (validation metrics) and evaluate_loader (test metrics)
    config = TrainConfig(task="binary", threshold=threshold, loss="bce")
    module = SegmentationModule(Logit(), config, ["bg", "fg"])
    logits = Logit()(torch.from_numpy(img)[None])
    assert np.array_equal(module.predict_classes(logits)[0].numpy() == 1, expect)
    truth = torch.ones((1, 16, 16), dtype=torch.long)  # all foreground: cm[1, 1] counts foreground calls
    m = evaluate_loader(
        Logit(),
        [{"image": torch.from_numpy(img)[None], "mask": truth}],
        ["bg", "fg"],
        binary=True,
        threshold=threshold,
    )
    assert m["confusion_matrix"] == [[0, 0], [int((~expect).sum()), int(expect.sum())]]

    # the training report's sample panels
    (sample,) = _sample_predictions(Logit(), _OneChip(img), 1, binary=True, threshold=threshold)  # type: ignore[arg-type]
    assert np.array_equal(sample["pred"] == 1, expect)

    # prediction
    src = make_raster(img, name="p.tif")
    out = tmp_path / "map.tif"
    predict_raster(Logit(), _binary_meta(threshold), src, out, blocksize=16, device="cpu")
    with rasterio.open(out) as ds:
        got = ds.read(1)
    assert np.array_equal(got == 1, expect) and set(np.unique(got)) <= {0, 1}
