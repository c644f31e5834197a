"""Requests labelled harmful or benign, for the classifier's prompt pathway.

Harmful responses in ``../shared/data`` cover only JailbreakBench's 100 behaviours, so what a
harmful *request* looks like is learned from the request-only sets as well (AdvBench, HarmBench,
StrongREJECT, MaliciousInstruct, SimpleSafetyTests, refusal_direction's harmful splits, FigStep's
SafeBench questions, MM-SafetyBench's harmful scenarios) against benign ones (Alpaca instructions, JailbreakBench's benign goals).
Many of these sets share behaviours with JailbreakBench, so every request that nearly repeats a
held-out (validation or dev) prompt is dropped: the dev figures must not be helped by having
seen the dev behaviour as a training request.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Request:
    text: str
    harmful: bool
    source: str


def _csv_column(path: Path, column: str) -> Iterator[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            text = (row.get(column) or "").strip()
            if text:
                yield text


def _json_instructions(path: Path) -> Iterator[str]:
    for rec in json.loads(path.read_text()):
        yield rec["instruction"]


# MM-SafetyBench scenarios whose questions ask for harm. Left out: economic harm and sex, where
# many questions are benign ("What is the typical repayment period for payday loans?", "Describe
# the ranking of adult websites"), and the hazards the policy flags rather than blocks
# (political lobbying, legal, financial and health advice, government decisions)
MM_SAFETYBENCH_HARMFUL = ("01-Illegal_Activitiy", "02-HateSpeech", "03-Malware_Generation", "04-Physical_Harm",
                          "06-Fraud", "09-Privacy_Violence")


def _mm_safetybench(root: Path) -> Iterator[str]:
    folder = root / "multimodal" / "mm_safetybench" / "processed_questions"
    for scenario in MM_SAFETYBENCH_HARMFUL:
        for rec in json.loads((folder / f"{scenario}.json").read_text()).values():
            yield rec["Question"].strip()


def harmful_requests(root: Path) -> Iterator[Request]:
    sources: list[tuple[str, Iterable[str]]] = [
        ("advbench", _csv_column(root / "advbench" / "advbench_behaviors_harmbench_format.csv", "Behavior")),
        ("harmbench", _csv_column(root / "harmbench" / "harmbench_behaviors_text_all.csv", "Behavior")),
        ("strongreject", _csv_column(root / "strongreject" / "strongreject_dataset.csv", "forbidden_prompt")),
        ("simplesafetytests", _csv_column(root / "simplesafetytests" / "simplesafetytests.csv", "prompts_final")),
        ("figstep", _csv_column(root / "multimodal" / "figstep" / "safebench.csv", "question")),
    ]
    mi = root / "malicious_instruct" / "malicious_instruct.txt"
    sources.append(("malicious_instruct", (line.strip() for line in mi.read_text().splitlines() if line.strip())))
    for split in ("train", "val"):
        sources.append(("refusal_direction", _json_instructions(root / "refusal_direction" / f"harmful_{split}.json")))
    # last, so that the indices generated files hold into harmful_texts stay valid
    sources.append(("mm_safetybench", _mm_safetybench(root)))
    for name, texts in sources:
        for text in texts:
            yield Request(text, True, name)


def copyright_texts(root: Path) -> frozenset[str]:
    """HarmBench's copyright behaviours ("Generate the lyrics of ...", "Generate a long passage from ..."):
    hazard S8, which the shipped policy flags rather than blocks."""
    with open(root / "harmbench" / "harmbench_behaviors_text_all.csv", newline="", encoding="utf-8") as fh:
        return frozenset(row["Behavior"].strip() for row in csv.DictReader(fh) if row["FunctionalCategory"] == "copyright")


def harmful_texts(root: Path, *, exclude: Iterable[str] = ()) -> list[str]:
    """Every distinct harmful request, in a fixed order (files refer to them by index); ``exclude``
    leaves out the named sources."""
    skip = frozenset(exclude)
    return list(dict.fromkeys(r.text for r in harmful_requests(root) if r.source not in skip))


def topical_texts(root: Path) -> list[str]:
    """Benign requests on the harmful sets' topics, in a fixed order: XSTest's safe prompts (that
    only sound harmful) and JailbreakBench's benign goals (matched to its harmful behaviours)."""
    from guard.datasets.xstest import prompt_traces

    texts = [t.prompt for t in prompt_traces(root) if not t.unsafe]
    texts += [r.text for r in benign_requests(root) if r.source == "jbb_benign"]
    return list(dict.fromkeys(texts))


def benign_requests(root: Path) -> Iterator[Request]:
    for text in _json_instructions(root / "refusal_direction" / "harmless_train.json"):
        yield Request(text, False, "alpaca")
    with open(root / "jailbreakbench" / "jbb_benign_goals.tsv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            yield Request(row["goal"], False, "jbb_benign")


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


class NearRepeats:
    """Word-set Jaccard against many texts at once, through an inverted index."""

    def __init__(self, texts: Iterable[str], threshold: float = 0.5) -> None:
        self.sets = [w for w in {_words(t) for t in texts} if w]
        self.threshold = threshold
        self.index: dict[str, list[int]] = {}
        for i, words in enumerate(self.sets):
            for word in words:
                self.index.setdefault(word, []).append(i)

    def __contains__(self, text: str) -> bool:
        words = _words(text)
        shared = Counter(i for word in words for i in self.index.get(word, ()))
        return any(n / len(words | self.sets[i]) >= self.threshold for i, n in shared.items())


def requests(root: Path, held_out: Iterable[str], *, benign_limit: int = 4000, seed: int = 0) -> list[Request]:
    """Harmful and benign requests with every near-repeat of a held-out prompt removed.

    XSTest's safe prompts are left out on purpose: a run that taught them as benign here (with
    two other changes: benign "Sure, here is..." openers and less request dropout) lost recall
    on validation, 0.79 against 0.89 at about the same 4-5 % FPR.
    """
    import random

    held = NearRepeats(held_out)
    harmful = {r.text: r for r in harmful_requests(root)}
    benign = list({r.text: r for r in benign_requests(root)}.values())
    random.Random(seed).shuffle(benign)
    chosen = list(harmful.values()) + benign[:benign_limit]
    return [r for r in chosen if r.text not in held]
