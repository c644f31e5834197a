"""A third reading of a window that keeps word order: the mean outer product of neighbouring tokens.

The mean of static token vectors cannot tell "you should not mix X with Y" from "mix X with Y,
you should not wait": both pool to one point. Projecting every token onto the table's leading
``rank`` principal directions and averaging ``u_i ⊗ u_{i+1}`` over the window gives a
``rank * rank`` feature whose linear reading is a bilinear form over each token and its
successor, so order counts (``u_i ⊗ u_j`` is not ``u_j ⊗ u_i``) while paraphrases that use
neighbouring words still land close. Unlike the hashed n-grams (``guard.detectors.ngrams``)
it never memorises a particular id pair. The projection is fixed, so training computes each
window's feature once; serving costs one (n, rank) gather and a (rank, n) @ (n, rank) product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BigramWeights:
    table: np.ndarray  # (vocab, rank): each token's vector on the leading principal directions
    mix: np.ndarray  # (rank * rank, hidden): the window's mean neighbour product into the hidden layer

    @property
    def rank(self) -> int:
        return self.table.shape[1]


def basis(table: np.ndarray, rank: int) -> np.ndarray:
    """(dim, rank): the leading principal directions of the (centred) token vectors."""
    centred = table - table.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    # an SVD's signs are arbitrary: fix them so that a rebuild gives the same features
    signs = np.sign(vt[:rank].sum(axis=1, keepdims=True))
    return (vt[:rank] * np.where(signs == 0, 1.0, signs)).T.astype(np.float32)


def feature(vectors: np.ndarray) -> np.ndarray:
    """(rank * rank,): the mean of ``vectors[i] ⊗ vectors[i + 1]``; zeros for a window of one token."""
    rank = vectors.shape[1]
    if len(vectors) < 2:
        return np.zeros(rank * rank, dtype=np.float32)
    return (vectors[:-1].T @ vectors[1:]).ravel() / np.float32(len(vectors) - 1)


def features(projected: np.ndarray, token_ids) -> np.ndarray:
    """(windows, rank * rank): :func:`feature` of every window, from the projected token table."""
    out = np.empty((len(token_ids), projected.shape[1] ** 2), dtype=np.float32)
    for row, ids in enumerate(token_ids):
        out[row] = feature(projected[ids])
    return out
