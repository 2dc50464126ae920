"""Network weight identity: a digest of a module's tensors and seeded random initialisation.

A network built without pretrained weights or a checkpoint has random weights; features from it are only
comparable with features of the *same* random network. :func:`seeded_init` makes the initialisation
reproducible (a fixed seed, without disturbing the caller's random state) and :func:`state_digest` names
the weights actually used, so sessions and outputs can record them and a resumed job never mixes two
networks.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["seeded_init", "state_digest"]


def state_digest(module: nn.Module, length: int = 16) -> str:
    """SHA-256 (first ``length`` hex digits) of ``module``'s state dict: names, dtypes, shapes and bytes.

    Hashes the tensors' memory directly (no copies for contiguous CPU tensors): about 0.1 s per 100 MB
    of weights.
    """
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        if t.numel() == 0:
            continue
        flat = t.cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy() if flat.dtype != torch.bool else flat.numpy())
    return h.hexdigest()[:length]


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block (e.g. building a random network); restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
