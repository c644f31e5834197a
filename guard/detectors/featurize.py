"""Text -> token ids for the learned classifier, shared by training and serving.

Tokens come from all-MiniLM-L6-v2's WordPiece tokenizer, the vocabulary the static vectors were
distilled over. Only ``tokenizers`` and numpy: no torch at serving time.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer


class Featurizer:
    def __init__(self, tokenizer: Tokenizer, *, max_tokens: int = 128) -> None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def from_ids(self, ids: list[int] | np.ndarray) -> np.ndarray:
        # keep the end of an over-long window: the newest text is what is being judged
        tail = np.asarray(ids, dtype=np.int32)[-self.max_tokens :]
        return tail if len(tail) else np.zeros(1, dtype=np.int32)  # [PAD] stands in for empty text

    def __call__(self, text: str) -> np.ndarray:
        return self.from_ids(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.from_ids(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
