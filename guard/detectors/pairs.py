"""Turn ``(request, thought window)`` into the cross-encoder's input, the same way in training and serving.

The reader sees ``[CLS] request [SEP] window [SEP]``: the request's opening (who asks for what)
and the window's most recent text (what the model is doing about it now). The request is cut
to its opening tokens, the window to its newest ones, so a long request never pushes the newest thought out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

CLS, SEP, PAD = 101, 102, 0  # BERT uncased specials, fixed in all-MiniLM-L6-v2's vocabulary


@dataclass(frozen=True)
class PairLimits:
    max_tokens: int = 128  # the whole pair, specials included
    request_tokens: int = 32  # at most this much of the request


class PairEncoder:
    REQUEST_CACHE = 1024  # requests kept tokenised (one per stream in flight, and then some)

    def __init__(self, tokenizer: Tokenizer, limits: PairLimits = PairLimits()) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer, self.limits = tokenizer, limits
        self._requests: dict[str, list[int]] = {}

    def _request(self, text: str) -> list[int]:
        ids = self._requests.get(text)
        if ids is None:
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids[: self.limits.request_tokens]
            if len(self._requests) >= self.REQUEST_CACHE:
                self._requests.pop(next(iter(self._requests)))  # oldest first
            self._requests[text] = ids
        return ids

    def ids(self, request: str, window: str) -> tuple[list[int], int]:
        """Token ids of the pair and where its second segment starts."""
        req = self._request(request) if request else []
        room = self.limits.max_tokens - 3 - len(req)
        win = self.tokenizer.encode(window, add_special_tokens=False).ids[-room:] if room > 0 else []
        return [CLS, *req, SEP, *win, SEP], len(req) + 2

    def batch(self, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        """Padded ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64) for a batch."""
        encoded = [self.ids(r, w) for r, w in pairs]
        width = max(len(ids) for ids, _ in encoded)
        input_ids = np.full((len(encoded), width), PAD, dtype=np.int64)
        mask = np.zeros_like(input_ids)
        types = np.zeros_like(input_ids)
        for i, (ids, second) in enumerate(encoded):
            input_ids[i, : len(ids)] = ids
            mask[i, : len(ids)] = 1
            types[i, second : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}
