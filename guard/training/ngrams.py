"""Fit the hashed n-gram reading (``guard.detectors.ngrams``) on the classifier's own training windows.

A weighted logistic regression over binary, L2-normalised features, with the same labels and
per-set loss weights as the network, so both readings learn the same question. Trained in torch
(an ``EmbeddingBag`` of one column is a sparse linear model) with minibatch Adam and a small L2
penalty; a handful of epochs is enough, and stopping early is part of the regularisation.
"""

from __future__ import annotations

import sys

import numpy as np

from guard.detectors.ngrams import BUCKETS, features


def fit_ngrams(
    token_ids: list[np.ndarray],
    unsafe: np.ndarray,
    weight: np.ndarray,
    vocab: int,
    *,
    epochs: int = 4,
    lr: float = 0.05,
    l2: float = 1e-6,
    batch: int = 1024,
    seed: int = 0,
    threads: int = 2,
) -> tuple[np.ndarray, float]:
    """(weights over the buckets, bias)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    feats = [features(ids, vocab) for ids in token_ids]
    lengths = np.array([len(f) for f in feats])
    flat = torch.from_numpy(np.concatenate(feats))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    scale = torch.from_numpy(np.repeat(1.0 / np.sqrt(lengths), lengths).astype(np.float32))

    bag = nn.EmbeddingBag(BUCKETS, 1, mode="sum")
    nn.init.zeros_(bag.weight)
    bias = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([bag.weight, bias], lr=lr)
    y = torch.from_numpy(unsafe.astype(np.float32))
    w = torch.from_numpy((weight / weight.mean()).astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    n = len(token_ids)
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch):
            # the batch's windows, gathered out of the flat feature list
            size = lengths[idx.numpy()]
            offsets = np.concatenate([[0], np.cumsum(size)[:-1]])
            where = torch.from_numpy(np.repeat(starts[idx.numpy()] - offsets, size) + np.arange(size.sum()))
            offsets = torch.from_numpy(offsets)
            logit = bag(flat[where], offsets, per_sample_weights=scale[where])[:, 0] + bias
            loss = (F.binary_cross_entropy_with_logits(logit, y[idx], reduction="none") * w[idx]).mean()
            loss = loss + 0.5 * l2 * bag.weight.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"n-gram epoch {epoch + 1}/{epochs}: loss {total / n:.4f}", file=sys.stderr, flush=True)
    return bag.weight.detach().numpy()[:, 0].copy(), float(bias.item())
