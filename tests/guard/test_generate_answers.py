"""scripts/generate_answers.py against the real vLLM test server: --append keeps a file's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from guard.datasets import data_dir
from guard.datasets.generated import instructions

ROOT = Path(__file__).resolve().parents[2]
try:
    DATA = data_dir()
except FileNotFoundError:  # pragma: no cover - the shared data sits next to the checkout
    DATA = None


@pytest.mark.skipif(DATA is None, reason="../shared/data not present")
def test_append_answers_only_the_requests_the_file_lacks(vllm_url, tmp_path):
    texts = instructions(DATA)
    chosen = sorted(int(i) for i in np.random.default_rng(0).choice(len(texts), size=3, replace=False))
    kept = {"kind": "benign", "index": chosen[1], "response": "An answer written before."}
    out = tmp_path / "answers.jsonl"
    out.write_text(json.dumps(kept) + "\n")
    run = subprocess.run(
        [sys.executable, "scripts/generate_answers.py", "--kind", "benign", "--n", "3", "--append",
         "--url", vllm_url, "--out", str(out), "--max-tokens", "8", "--data-dir", str(DATA)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    assert "2 new benign answers, 1 kept" in run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == chosen  # sorted, one line per chosen request
    assert rows[1] == kept  # the old line is untouched, not asked again
    assert all(r["kind"] == "benign" and r["response"] for r in (rows[0], rows[2]))
