"""The trace format the evaluator reads: one JSON object per line.

``onset`` is the character offset, in ``reasoning + answer``, where unsafe content begins
(``None`` when unknown or safe). The set a trace belongs to is the part of ``id`` before the
first ``/``, so per-set figures need no extra field and the format stays exactly the contract.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal

Label = Literal["safe", "unsafe"]


@dataclass(frozen=True, slots=True)
class Trace:
    id: str
    prompt: str
    reasoning: str
    answer: str
    label: Label
    category: str | None = None
    onset: int | None = None

    @property
    def unsafe(self) -> bool:
        return self.label == "unsafe"

    @property
    def set_name(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def text(self) -> str:
        return self.reasoning + self.answer

    @classmethod
    def from_dict(cls, obj: dict[str, object]) -> "Trace":
        label = obj.get("label")
        if label not in ("safe", "unsafe"):
            raise ValueError(f"trace {obj.get('id')!r}: label must be 'safe' or 'unsafe', got {label!r}")
        onset = obj.get("onset")
        return cls(
            id=str(obj["id"]),
            prompt=str(obj.get("prompt") or ""),
            reasoning=str(obj.get("reasoning") or ""),
            answer=str(obj.get("answer") or ""),
            label=label,  # type: ignore[arg-type]
            category=obj.get("category") or None,  # type: ignore[arg-type]
            onset=None if onset is None else int(onset),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def read_traces(path: str | Path) -> list[Trace]:
    with open(path, encoding="utf-8") as fh:
        return [Trace.from_dict(json.loads(line)) for line in fh if line.strip()]


def iter_traces(lines: Iterable[str]) -> Iterator[Trace]:
    for line in lines:
        if line.strip():
            yield Trace.from_dict(json.loads(line))


def write_traces(path: str | Path, traces: Iterable[Trace]) -> int:
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for trace in traces:
            fh.write(json.dumps(trace.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n
