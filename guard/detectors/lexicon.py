"""A transparent pattern detector: the first real tier and a dependency-free fallback.

It scores windows by weighted regular expressions per hazard category (MLCommons S-codes) and
spots self-flagged refusals ("this is illegal, I should refuse"). It is deliberately narrow:
its patterns target *instructions* for harm, not topics, so text that merely mentions weapons
or drugs stays low. The learned classifier is the default; this one is for operators who want
rules they can read, and for tests of the seam.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from guard.detectors.base import Detector, Window
from guard.verdict import Detection

# (category, weight, pattern). Weights are log-odds-like contributions; see _squash.
_UNSAFE: list[tuple[str, float, str]] = [
    ("S9", 1.55, r"\b(pipe bomb|explosive (powder|charge|device)|detonat\w+|nerve agent|sarin|anthrax|dirty bomb)\b"),
    ("S9", 1.5, r"\b(fuse|shrapnel|ammonium nitrate|black powder|thermite)\b"),
    ("S9", 1.5, r"\b(pack|fill|stuff)\w* (a |the )?(\w+ )?(pipe|pressure cooker|container) (tightly )?with (\w+ )?(powder|explosives?|nails)\b"),
    ("S2", 1.5, r"\b(synthesi[sz]e|cook|manufactur\w*) (meth|methamphetamine|fentanyl|heroin|cocaine)\b"),
    ("S2", 1.5, r"\b(red phosphorus|pseudoephedrine|lye and iodine|anhydrous ammonia)\b"),
    ("S2", 1.5, r"\b(pick the lock|break into (the|a|their) (house|home|car)|hotwire|launder (the )?money|steal (their|the) (credit card|identity))\b"),
    ("S2", 1.5, r"\b(ransomware|keylogger|phishing (email|page)|sql injection payload|credential stuffing)\b"),
    ("S1", 1.5, r"\b(kill|poison|strangle|stab) (him|her|them|your (wife|husband|neighbou?r|boss))\b"),
    ("S11", 1.55, r"\b(lethal dose|overdose on|ways to (kill|hurt) (yourself|myself)|cut (yourself|myself) deeper)\b"),
    ("S10", 1.5, r"\b(are (subhuman|vermin|inferior)|exterminate (the|all) \w+)\b"),
    ("S7", 1.5, r"\b(dox\w*|home address of|track (her|his|their) (phone|location) without)\b"),
    ("S4", 3.0, r"\b(sexual\w* (with|involving) (a )?(child|minor|kid)s?)\b"),
]
# Phrasings of *complying* with a harmful request; they raise any category already present.
_COMPLY = re.compile(
    r"\b(step (one|1)|first,? (you|get|take|mix|obtain)|here('s| is) how (to|you)|sure[,!] (here|i can)|you will need)\b",
)
_REFUSAL = re.compile(
    r"\b(i (can(no|')t|won't|will not|must not|should not|shouldn't) (help|assist|provide|do that|comply)"
    r"|i (should|must|need to|have to) (refuse|decline)"
    r"|(this|that|the request) (is|would be|seems) (illegal|harmful|dangerous|unethical)"
    r"|not (able|going) to (help|provide|assist)|against (my|the) (guidelines|policy))",
)
# every pattern is lower-case and reads the lower-cased window: lowering it once per check is
# ~40 % cheaper than fourteen case-insensitive scans, and checks run every few tokens of every
# stream, so this is gateway CPU per chunk
_COMPILED = [(cat, w, re.compile(p)) for cat, w, p in _UNSAFE]


def _squash(logit: float) -> float:
    # one strong pattern 0.78-0.79 (under the policy's unsafe threshold, 0.8: a keyword alone is
    # not harm; the weights were 2.5 before session 11 lowered the threshold from 0.97 to 0.9,
    # then 2.2 and 2.0 until session 16 lowered it to 0.85, then 1.85 and 1.8 until session 17
    # lowered it to 0.8), one with a compliance phrase ~0.95, two ~0.95, two with compliance
    # ~0.99: spelled-out instructions read above the cross-validated thresholds (high 0.9,
    # collapse 0.9), as blatant recipes must
    return 1.0 - math.exp(-logit) if logit > 0 else 0.0


class LexiconDetector(Detector):
    name = "lexicon"

    def score(self, window: Window) -> Detection:
        text = window.full.lower()
        per_cat: dict[str, float] = {}
        for cat, weight, pattern in _COMPILED:
            hits = len(pattern.findall(text))
            if hits:
                per_cat[cat] = per_cat.get(cat, 0.0) + weight * min(hits, 2)
        refusal = 0.9 if _REFUSAL.search(text) else 0.0
        if not per_cat:
            return Detection(unsafe=0.0, refusal=refusal, detector=self.name)
        if _COMPLY.search(text):
            per_cat = {c: v + 1.5 for c, v in per_cat.items()}
        category, logit = max(per_cat.items(), key=lambda kv: kv[1])
        if refusal:
            logit /= 3.0  # discussing a harm in order to decline it is the safe pattern
        return Detection(unsafe=_squash(logit), category=category, refusal=refusal, detector=self.name)

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        return [self.score(w) for w in windows]
