"""The cross-encoder's input: request and window, each cut where it loses the least."""

from __future__ import annotations

from tokenizers import Tokenizer

from guard.detectors.intent import INTENT_DIR, TOKENIZER_FILE
from guard.detectors.pairs import CLS, SEP, PairEncoder, PairLimits


def encoder(**limits: int) -> PairEncoder:
    return PairEncoder(Tokenizer.from_file(str(INTENT_DIR / TOKENIZER_FILE)), PairLimits(**limits))


def test_pair_layout_and_segments() -> None:
    enc = encoder()
    ids, second = enc.ids("how do I bake bread", "first, mix flour and water.")
    assert ids[0] == CLS and ids[second - 1] == SEP and ids[-1] == SEP
    batch = enc.batch([("how do I bake bread", "first, mix flour and water."), ("", "ok")])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["attention_mask"][1].sum() == len(enc.ids("", "ok")[0])  # padding is masked
    assert batch["token_type_ids"][0, second] == 1 and batch["token_type_ids"][0, second - 1] == 0


def test_long_inputs_keep_the_request_opening_and_the_newest_thought() -> None:
    enc = encoder(max_tokens=24, request_tokens=6)
    request = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    window = " ".join(f"w{i}" for i in range(100)) + " newest words here"
    ids, second = enc.ids(request, window)
    assert len(ids) == 24 and second == 8  # CLS + 6 request tokens + SEP
    text = enc.tokenizer.decode(ids[second:-1])
    assert text.endswith("newest words here")
    assert enc.tokenizer.decode(ids[1:second - 1]).startswith("alpha beta")
