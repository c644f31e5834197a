"""Answers written by a local model: more topics on both sides than the real responses cover.

The real benign answers (refusal_direction's harmless completions) cover about 100 instructions,
65 of them on the fit side, so a helpful answer about an unusual topic (encryption, chemistry)
looks like the harmful answers the classifier was shown; and the real harmful answers cover only
JailbreakBench's 100 behaviours, 65 on the fit side, so harm on another topic looks safe.
``scripts/generate_answers.py`` asks a local model (the embedded SmolLM2-135M-Instruct served by
vLLM) to answer Alpaca instructions (``kind`` benign: random ones; ``neighbours``: those nearest
the harmful requests, ``guard.training.neighbours``) or, with the answer opened for it, the
request-only sets' harmful requests (``kind`` harmful), and writes one ``{"kind", "index",
"response"}`` line each: the index into the request list, never its text, so nothing of the
datasets is copied. These samples are trained on and never reported on; the benign ones are
also scored out of fold by the cross-validation that tunes the thresholds
(``guard.training.crossval.fold_scores``), never by validation or dev.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from guard.datasets.prompts import NearRepeats, copyright_texts, harmful_texts, topical_texts
from guard.datasets.sample import Sample

GENERATED = "generated"  # the sample source, and the training set of the benign ones
GENERATED_HARMFUL = "generated_harmful"  # the training set of the harmful ones (see generated_set)
_ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# the answers the shipped classifier was trained with (scripts/generate_answers.py, seed 0)
SHIPPED = _ARTIFACTS / "benign_generated.jsonl"
SHIPPED_HARMFUL = _ARTIFACTS / "harmful_generated.jsonl"
SHIPPED_NEIGHBOURS = _ARTIFACTS / "neighbours_generated.jsonl"
KINDS = ("benign", "harmful", "topical", "neighbours")
TOPICAL = _ARTIFACTS / "topical_generated.jsonl"  # written by --kind topical; not trained on by default
# kinds whose index is into the Alpaca instructions; their answers are benign samples of one group per instruction
_ALPACA = ("benign", "neighbours")


def instructions(root: Path) -> list[str]:
    return [r["instruction"] for r in json.loads((root / "refusal_direction" / "harmless_train.json").read_text())]


def requests_of(kind: str, root: Path) -> list[str]:
    """The requests a file of that kind indexes into."""
    return {"benign": instructions, "neighbours": instructions, "harmful": harmful_texts,
            "topical": topical_texts}[kind](root)


def generated_samples(root: Path, path: str | Path, held_out: Iterable[str] = ()) -> list[Sample]:
    """The file's answers as samples, less any whose request nearly repeats a held-out request.

    A line without ``kind`` is benign (the first files had no such field).
    """
    texts = {kind: requests_of(kind, root) for kind in KINDS}
    copyright = copyright_texts(root)  # the only hazard the generated answers are labelled with
    held = NearRepeats(held_out)
    out = []
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        kind = rec.get("kind", "benign")
        prompt, response = texts[kind][rec["index"]], rec["response"].strip()
        if response and prompt not in held:
            group = f"alpaca:{prompt}" if kind in _ALPACA else f"generated-{kind}:{prompt}"
            key = str(rec["index"]) if kind == "benign" else f"{kind}/{rec['index']}"
            harmful = kind == "harmful"
            out.append(Sample(GENERATED, key, group, prompt, "", response, "harmful" if harmful else "benign",
                              "S8" if harmful and prompt in copyright else None))
    return out


def generated_set(sample: Sample) -> str:
    """The training set a generated sample counts in (each weighs the same in total, whatever its size):
    ``generated`` for random Alpaca answers, ``generated_<kind>`` for the others."""
    kind, _, _ = sample.key.rpartition("/")
    return f"{GENERATED}_{kind}" if kind else GENERATED


def generated_files(arg: str) -> list[Path]:
    """``FILE,FILE`` from a command line; empty for none."""
    return [Path(part.strip()) for part in arg.split(",") if part.strip()]
