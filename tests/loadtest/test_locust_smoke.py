"""CI smoke load test: Locust, headless, a few users for ~30 s, through the real gateway in front of
the real vLLM serving the tiny scripted model. The gateway runs the shipped policy with `unsafe`
at 0.95 instead of 0.995: the image-jailbreak script reads 0.988 at its worst window, under the
shipped threshold (image-borne thoughts are the reader's weakest kind, see the model card), and
this test is about behaviour under load, not the reader's calibration.

Fails on any request failure (HTTP error, broken or truncated stream, error frame) and on any
benign request the guard blocked; also checks that the unsafe scripts were stopped, that the
gateway's in-flight gauge and vLLM's running requests are back to zero afterwards.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from typing import Callable

import httpx
import pytest
import yaml

from bench.common import metric_value
from guard.policy import DEFAULT_POLICY_PATH
from loadtest.taskmix import SMOKE_MIX
from tests.support import ROOT, wait_running_zero

pytestmark = pytest.mark.vllm

USERS, RUN_TIME_S = 4, 30


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def gateway_url(gateway_factory: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> str:
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    policy["thresholds"]["unsafe"] = 0.95
    path = tmp_path_factory.mktemp("policy") / "smoke.yaml"
    path.write_text(yaml.safe_dump(policy))
    return gateway_factory(guard={"policy_file": str(path)})


def test_locust_smoke(gateway_url: str, vllm_url: str, served_model: str, tmp_path: Path) -> None:
    prefix = tmp_path / "smoke"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
        "-H", gateway_url, "-u", str(USERS), "-r", str(USERS), "-t", f"{RUN_TIME_S}s", "--stop-timeout", "20",
        "--only-summary", "--csv", str(prefix), "--html", str(tmp_path / "smoke.html"),
        "--mix", SMOKE_MIX, "--model", served_model, "--max-tokens", "128", "--seed", "7",
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIME_S + 60,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    elapsed = time.monotonic() - started
    out = proc.stdout[-6000:] + proc.stderr[-6000:]
    stats = _rows(Path(f"{prefix}_stats.csv"))
    failures = _rows(Path(f"{prefix}_failures.csv"))
    assert not failures, f"request failures under load: {failures}\n{out}"
    assert proc.returncode == 0, out
    assert elapsed < 60 + 30, f"the smoke run took {elapsed:.0f}s"

    by = {(r["Type"], r["Name"]): r for r in stats}
    posts = [r for (t, _), r in by.items() if t == "POST"]
    assert sum(int(r["Request Count"]) for r in posts) >= USERS, out
    assert all(int(r["Failure Count"]) == 0 for r in stats), out
    outcomes = {n: int(r["Request Count"]) for (t, n), r in by.items() if t == "OUTCOME"}
    assert outcomes.get("error", 0) == 0, outcomes
    assert outcomes.get("ok", 0) > 0, outcomes
    # benign scripts were never blocked (a blocked benign request is a Locust failure, see above)
    # and the unsafe scripts that ran were stopped by the guard
    unsafe = int(by.get(("POST", "scripted_unsafe"), {}).get("Request Count", 0))
    if unsafe:
        assert outcomes.get("blocked", 0) + outcomes.get("steered", 0) >= unsafe, (outcomes, unsafe)
    for kind in ("TTFT", "TTFAT", "ITL", "TOKENS"):
        assert any(t == kind for t, _ in by), f"custom request type {kind} missing from the stats"
    assert Path(tmp_path / "smoke.html").stat().st_size > 0

    # nothing is left in flight, in the gateway or in vLLM
    wait_running_zero(vllm_url, within=10)
    deadline = time.monotonic() + 10
    while metric_value(httpx.get(f"{gateway_url}/metrics").text, "thoughtguard_requests_in_flight") != 0:
        assert time.monotonic() < deadline, "gateway in-flight gauge did not return to 0"
        time.sleep(0.2)
