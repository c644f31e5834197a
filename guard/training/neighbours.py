"""Benign instructions that sit nearest the harmful requests: where topic is not harm.

A bag-of-tokens classifier that has seen harm mostly on a few topics learns those topics as
harm (an answer explaining asymmetric encryption reads like ransomware). The cure is benign
answers *on those topics*. This ranks the Alpaca instructions (``harmless_train.json``) by
their highest cosine similarity to any harmful request of the request-only sets, in
all-MiniLM-L6-v2's sentence space (mean-pooled, the model's own use), so that
``scripts/generate_answers.py --kind neighbours`` can answer the nearest ones. The ranking
reads only the data and the encoder, never a trained artifact, so it rebuilds the same.
torch and transformers are imported here only (training side).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from guard.datasets.generated import instructions
from guard.datasets.progress import progress
from guard.datasets.prompts import harmful_texts
from guard.training.distil import encoder, model_dir


def sentence_vectors(texts: list[str], *, batch: int = 256) -> np.ndarray:
    """(len(texts), 384) unit vectors: MiniLM mean-pooled over real tokens."""
    import torch
    from tokenizers import Tokenizer

    model = encoder()
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(128)
    tok.enable_padding()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    starts = range(0, len(texts), batch)
    with torch.inference_mode():
        for start in progress(starts, "embedding requests", total=len(starts)):
            enc = tok.encode_batch(texts[start : start + batch])
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).float()
            out[start : start + len(enc)] = ((hidden * m).sum(1) / m.sum(1)).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def nearest_instructions(root: Path, n: int) -> list[int]:
    """Indices into :func:`guard.datasets.generated.instructions` of the ``n`` nearest the harm."""
    benign = sentence_vectors(instructions(root))
    # ranked against the requests the shipped neighbours file was built from: MM-SafetyBench
    # joined the harmful requests later (session 16), and would move the ranking
    harmful = sentence_vectors(harmful_texts(root, exclude=("mm_safetybench",)))
    nearest = np.max(benign @ harmful.T, axis=1)
    return sorted(int(i) for i in np.argsort(-nearest, kind="stable")[:n])
