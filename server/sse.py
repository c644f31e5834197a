"""Chat-completion chunks and the SSE framing the openai SDK reads."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from guard.events import Stage, Usage
from guard.verdict import Reading

DONE = b"data: [DONE]\n\n"
# an SSE comment: clients (the openai SDK among them) skip it, proxies see the stream is alive
KEEPALIVE = b": keep-alive\n\n"


_encode = msgspec.json.Encoder().encode  # compact UTF-8, as json.dumps(separators, ensure_ascii=False)


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + _encode(obj) + b"\n\n"


def usage_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


class ChunkWriter:
    """Builds ``chat.completion.chunk`` frames for one response."""

    def __init__(self, completion_id: str, model: str, created: int | None = None) -> None:
        self.base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created or int(time.time()),
            "model": model,
        }

    def _choice(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason, **extra}
        return _frame({**self.base, "choices": [choice]})

    def role(self) -> bytes:
        return self._choice({"role": "assistant", "content": ""})

    def text(self, stage: Stage, text: str) -> bytes:
        if stage is Stage.REASONING:
            # vLLM's current key and the older one many clients still read
            return self._choice({"reasoning": text, "reasoning_content": text})
        return self._choice({"content": text})

    def finish(self, reason: str, *, content: str | None = None, extension: dict[str, Any] | None = None) -> bytes:
        delta: dict[str, Any] = {} if content is None else {"content": content}
        extra = {"thoughtguard": extension} if extension is not None else {}
        return self._choice(delta, reason, **extra)

    def reading(self, reading: Reading) -> bytes:
        """The inspector's debug extension: one checked window, in a chunk with no choices (as the
        usage chunk), so clients that did not ask for it would skip it anyway."""
        return _frame({**self.base, "choices": [], "thoughtguard": {"windows": [reading.as_dict()]}})

    def usage(self, usage: Usage) -> bytes:
        return _frame({**self.base, "choices": [], "usage": usage_dict(usage)})

    def error(self, message: str, *, type: str, code: str | None = None) -> bytes:
        return _frame({"error": {"message": message, "type": type, "param": None, "code": code}})
