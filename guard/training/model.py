"""The classifier network, trained in torch; serving runs the same maths in numpy.

Input: the mean of the window's distilled MiniLM token vectors (frozen: with a few hundred
harmful behaviours to learn from, tuned token vectors memorise topics and generalise worse).
One hidden layer, three heads (unsafe, refusal, hazard category). Because the mean is taken
before the first (linear) layer, :func:`fold` moves that layer into the token table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from guard.datasets.categories import S_CODES


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 128
    epochs: int = 15
    batch: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    category_weight: float = 0.5
    threads: int = 2


def normalise(table: np.ndarray) -> np.ndarray:
    """Centre the distilled vectors (their shared direction carries no meaning) and scale to unit mean norm."""
    centred = table - table.mean(axis=0, keepdims=True)
    return (centred / np.linalg.norm(centred, axis=1).mean()).astype(np.float32)


def pooled(table: np.ndarray, token_ids: list[np.ndarray], chunk: int = 4096) -> np.ndarray:
    """Mean token vector of every window (the frozen input), computed once."""
    import torch
    from torch import nn

    bag = nn.EmbeddingBag.from_pretrained(torch.from_numpy(table), mode="mean")
    out = []
    with torch.no_grad():
        for i in range(0, len(token_ids), chunk):
            part = token_ids[i : i + chunk]
            flat = torch.from_numpy(np.concatenate(part).astype(np.int64))
            lengths = torch.tensor([len(p) for p in part])
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
            out.append(bag(flat, offsets).numpy())
    return np.concatenate(out)


def fit(
    x: np.ndarray,
    unsafe: np.ndarray,
    refusal: np.ndarray,
    category: np.ndarray,  # index into S_CODES, -1 where none
    weight: np.ndarray,
    cfg: TrainConfig,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads)
    net = nn.Sequential(
        nn.Dropout(cfg.dropout), nn.Linear(x.shape[1], cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 2 + len(S_CODES))
    )
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    X = torch.from_numpy(x)
    y_u = torch.from_numpy(unsafe.astype(np.float32))
    y_r = torch.from_numpy(refusal.astype(np.float32))
    y_c = torch.from_numpy(category.astype(np.int64))
    w = torch.from_numpy((weight / weight.mean()).astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    for epoch in range(cfg.epochs):
        net.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch):
            logits, wi = net(X[idx]), w[idx]
            loss = (F.binary_cross_entropy_with_logits(logits[:, 0], y_u[idx], reduction="none") * wi).mean()
            loss = loss + (F.binary_cross_entropy_with_logits(logits[:, 1], y_r[idx], reduction="none") * wi).mean()
            has_cat = y_c[idx] >= 0
            if has_cat.any():
                ce = F.cross_entropy(logits[has_cat, 2:], y_c[idx][has_cat], reduction="none")
                loss = loss + cfg.category_weight * (ce * wi[has_cat]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / n:.4f}", file=sys.stderr, flush=True)
    first, second = net[1], net[3]
    return {
        "w1": first.weight.detach().numpy().T.copy(),
        "b1": first.bias.detach().numpy().copy(),
        "w2": second.weight.detach().numpy().T.copy(),
        "b2": second.bias.detach().numpy().copy(),
    }


def fold(table: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """(vocab, hidden): each token's vector already through the first layer's weights."""
    return (table @ params["w1"]).astype(np.float32)
