"""Losses: every registered loss honours the ignore index, has gradients, and is ~0 for perfect logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rasterlearn.errors import ConfigError
from rasterlearn.losses import CombinedLoss, build_loss, class_weights_from_counts, list_losses

MULTI = [n for n in list_losses() if n != "bce"]


def _data(c: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, max(c, 2), (2, 8, 8), generator=g)
    target[:, :2] = 255
    return logits, target


@pytest.mark.parametrize(
    ("name", "channels"), [(n, c) for n in list_losses() for c in (1, 3) if n != "bce" or c == 1]
)
def test_loss_finite_gradient_and_ignores_ignored_pixels(name, channels):
    loss_fn = build_loss(name, ignore_index=255)
    logits, target = _data(channels)
    loss = loss_fn(logits, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert logits.grad[:, :, :2].abs().sum() == 0  # ignored rows get no gradient
    changed = logits.detach().clone()
    changed[:, :, :2] = 100.0 * torch.randn_like(changed[:, :, :2])
    assert torch.allclose(loss_fn(changed, target), loss.detach(), atol=1e-5)


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "focal_tversky", "lovasz", "ce", "focal"])
def test_perfect_prediction_gives_near_zero_loss(name):
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0] = 255
    logits = 50.0 * torch.nn.functional.one_hot(target.clamp(0, 2), 3).permute(0, 3, 1, 2).float()
    assert (
        build_loss(name, params={n: {"smooth": 0.0} for n in [name] if name in ("dice", "jaccard")})(
            logits, target
        )
        < 1e-3
    )
    wrong = -logits
    assert build_loss(name)(wrong, target) > 0.3


def test_binary_losses_use_foreground_channel():
    target = torch.tensor([[[0, 1], [1, 255]]])
    good = torch.tensor([[[[-20.0, 20.0], [20.0, 0.0]]]])
    for name in ("bce", "ce", "dice", "focal", "lovasz", "jaccard"):
        assert build_loss(name)(good, target) < 0.05, name
        assert build_loss(name)(-good, target) > 0.5, name


def test_all_ignored_batch_gives_zero_loss_with_graph():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    for name in MULTI:
        loss = build_loss(name)(logits, target)
        assert float(loss.detach()) == 0.0
        loss.backward()


def test_build_loss_combinations_and_errors():
    loss = build_loss("ce+0.5*dice", params={"ce": {"label_smoothing": 0.1}})
    assert isinstance(loss, CombinedLoss) and loss.weights == [1.0, 0.5] and loss.names == ["ce", "dice"]
    logits, target = _data(3)
    expected = build_loss("ce", params={"ce": {"label_smoothing": 0.1}})(logits, target) + 0.5 * build_loss(
        "dice"
    )(logits, target)
    assert torch.allclose(loss(logits, target), expected)
    assert isinstance(build_loss({"focal": 1.0, "lovasz": 2.0}), CombinedLoss)
    with pytest.raises(ConfigError, match="choose from"):
        build_loss("hinge")
    with pytest.raises(ConfigError, match="Bad parameters"):
        build_loss("dice", params={"dice": {"nope": 1}})
    with pytest.raises(ConfigError, match="not in the loss"):
        build_loss("ce", params={"dice": {"smooth": 1}})


def test_class_weights_shift_cross_entropy():
    logits, target = _data(3)
    plain = build_loss("ce")(logits, target)
    weighted = build_loss("ce", class_weights=[1.0, 5.0, 1.0])(logits, target)
    assert not torch.allclose(plain, weighted)


def test_class_weights_from_counts():
    w = class_weights_from_counts([900, 100])
    assert np.allclose(w, [1 / (2 * 0.9), 1 / (2 * 0.1)])
    med = class_weights_from_counts([600, 300, 100], "median")
    assert np.allclose(med, [0.3 / 0.6, 1.0, 0.3 / 0.1])
    sq = class_weights_from_counts([900, 100], "inverse_sqrt")
    assert np.allclose(sq, np.sqrt(w))
    assert class_weights_from_counts([10, 0, 10])[1] == 0.0
    assert class_weights_from_counts([1, 1], "none") is None
    assert max(class_weights_from_counts([1e9, 1])) == 50.0
    with pytest.raises(ConfigError):
        class_weights_from_counts([0, 0])
