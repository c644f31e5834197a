"""The inspector page and its debug extension, through the real gateway and the tiny vLLM model.

The browser tests drive Debian's headless Chromium through Selenium and its chromedriver; `.ci/run`
installs both and sets THOUGHTGUARD_REQUIRE_BROWSER=1, so there a missing browser fails instead of
skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import openai
import pytest
import yaml

from guard.policy import DEFAULT_POLICY_PATH
from tests.support import CONVERSATIONS, stream_collect, user_message

pytestmark = pytest.mark.vllm

INSPECTOR_KEY, USER_KEY = "inspector-key", "user-key"


@pytest.fixture(scope="module")
def strict_policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The default policy at ``unsafe`` 0.95: the tiny script's onset window reads 0.995, under the
    shipped 0.998, so only this policy cuts at the onset (a policy choice the page offers)."""
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data["thresholds"]["unsafe"] = 0.95
    path = tmp_path_factory.mktemp("inspector") / "strict.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def open_inspector(gateway_factory: Callable[..., str], strict_policy: str) -> str:
    return gateway_factory(inspector={"enabled": True, "policies": {"strict": strict_policy}})


@pytest.fixture(scope="module")
def keyed_inspector(gateway_factory: Callable[..., str], strict_policy: str) -> str:
    return gateway_factory(auth={"api_keys": [USER_KEY]},
                           inspector={"enabled": True, "api_keys": [INSPECTOR_KEY], "policies": {"strict": strict_policy}})


def chat(base: str, model: str, conv_id: str, *, key: str | None = None, **guard: Any) -> httpx.Response:
    body = {"model": model, "messages": user_message(CONVERSATIONS[conv_id]), "stream": True, "temperature": 0,
            "max_tokens": 256, "thoughtguard": guard}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=120)


def frames(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def windows_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [w for c in chunks for w in (c.get("thoughtguard") or {}).get("windows", [])]


# --- the debug extension ------------------------------------------------------------------------

def test_debug_extension_is_refused_when_the_inspector_is_off(gateway_url: str, served_model: str) -> None:
    for guard in ({"windows": True}, {"policy": "default"}):
        r = chat(gateway_url, served_model, "benign", **guard)
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["code"] == "inspector_disabled" and err["type"] == "permission_error"
        assert set(err) == {"message", "type", "param", "code"}
    assert httpx.get(f"{gateway_url}/inspect").status_code == 404
    # the server keeps serving
    assert chat(gateway_url, served_model, "benign").status_code == 200


def test_debug_extension_needs_the_inspector_right(keyed_inspector: str, served_model: str) -> None:
    r = chat(keyed_inspector, served_model, "benign", key=USER_KEY, windows=True)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    r = chat(keyed_inspector, served_model, "benign", key=USER_KEY, policy="strict")
    assert r.status_code == 403
    assert chat(keyed_inspector, served_model, "benign", windows=True).status_code == 401
    ok = chat(keyed_inspector, served_model, "benign", key=INSPECTOR_KEY, windows=True)
    assert ok.status_code == 200 and windows_of(frames(ok))
    # an ordinary request with an ordinary key still works, and carries no readings
    plain = chat(keyed_inspector, served_model, "benign", key=USER_KEY)
    assert plain.status_code == 200 and not windows_of(frames(plain))


def test_inspector_page_is_behind_the_key(keyed_inspector: str) -> None:
    r = httpx.get(f"{keyed_inspector}/inspect")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{keyed_inspector}/inspect", auth=("me", USER_KEY)).status_code == 403
    r = httpx.get(f"{keyed_inspector}/inspect", auth=("me", INSPECTOR_KEY))
    assert r.status_code == 200 and "thoughtguard inspector" in r.text
    cfg = httpx.get(f"{keyed_inspector}/inspect/config", headers={"Authorization": f"Bearer {INSPECTOR_KEY}"}).json()
    assert set(cfg["policies"]) == {"default", "strict"} and cfg["policies"]["strict"]["unsafe"] == 0.95


def test_unknown_policy_is_a_400(open_inspector: str, served_model: str) -> None:
    r = chat(open_inspector, served_model, "benign", policy="nope")
    assert r.status_code == 400 and r.json()["error"]["param"] == "thoughtguard.policy"


def test_readings_cover_the_thought_and_carry_nothing_of_other_requests(open_inspector: str, served_model: str) -> None:
    """Two streams at once, only one asking for readings: its windows are its own text, in order,
    and the other stream sees none."""
    got: dict[str, httpx.Response] = {}

    def go(name: str, conv: str, **guard: Any) -> None:
        got[name] = chat(open_inspector, served_model, conv, **guard)

    threads = [threading.Thread(target=go, args=("inspected", "benign"), kwargs={"windows": True}),
               threading.Thread(target=go, args=("other", "unsafe_reasoning"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conv = CONVERSATIONS["benign"]
    ws = windows_of(frames(got["inspected"]))
    for stage, text in (("reasoning", conv["reasoning"]), ("answer", conv["answer"])):
        mine = [w for w in ws if w["stage"] == stage]
        assert "".join(w["text"] for w in mine).strip() == text
        assert [w["start"] for w in mine] == [0] + [w["end"] for w in mine[:-1]]
        assert all(w["decision"] == "release" and 0 <= w["score"] < 0.2 for w in mine)
    assert not windows_of(frames(got["other"]))
    # the SDK reads the stream with its readings chunks as any other
    stream = openai.OpenAI(base_url=f"{open_inspector}/v1", api_key="x", max_retries=0).chat.completions.create(
        model=served_model, messages=user_message(conv), temperature=0, max_tokens=256, stream=True,
        extra_body={"thoughtguard": {"windows": True}})
    assert stream_collect(stream)["content"].strip() == conv["answer"]


def test_non_streaming_readings_ride_in_the_extension(open_inspector: str, served_model: str) -> None:
    conv = CONVERSATIONS["unsafe_reasoning"]
    r = httpx.post(f"{open_inspector}/v1/chat/completions", timeout=120, json={
        "model": served_model, "messages": user_message(conv), "temperature": 0, "max_tokens": 256,
        "thoughtguard": {"windows": True, "policy": "strict"}})
    ext = r.json()["choices"][0]["thoughtguard"]
    assert ext["action"] == "block"
    decisions = [w["decision"] for w in ext["windows"]]
    assert decisions[-1] == "block" and "suspect" in decisions


# --- the page in a real browser ------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("THOUGHTGUARD_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver on this machine (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # the machine's network is closed: without these Chromium's background connections pile up
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    drv = webdriver.Chrome(options=options, service=Service(driver))
    yield drv
    drv.quit()


def ask(drv: Any, url: str, prompt: str, policy: str = "default") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    drv.get(url)
    WebDriverWait(drv, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    Select(drv.find_element(By.ID, "policy")).select_by_value(policy)
    drv.find_element(By.ID, "prompt").send_keys(prompt)
    drv.find_element(By.ID, "send").click()
    WebDriverWait(drv, 120).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done") == "1")


def test_page_shows_the_block_where_the_harm_begins(browser: Any, keyed_inspector: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    conv = CONVERSATIONS["unsafe_reasoning"]
    host = keyed_inspector.removeprefix("http://")
    # the key as the Basic password in the URL: the browser keeps it for the page's own requests
    ask(browser, f"http://inspector:{INSPECTOR_KEY}@{host}/inspect", conv["prompt"], policy="strict")
    browser.save_screenshot(str(tmp_path / "inspector-block.png"))
    outcome = browser.find_element(By.ID, "outcome")
    assert outcome.get_attribute("data-action") == "block", outcome.text
    wins = browser.find_elements(By.CSS_SELECTOR, "#produced-reasoning .win")
    onset = conv["onset"]
    at_onset = next(w for w in wins if int(w.get_attribute("data-start")) <= onset < int(w.get_attribute("data-end")))
    blocks = browser.find_elements(By.CSS_SELECTOR, "#produced-reasoning .verdict[data-action=block]")
    assert len(blocks) == 1
    # the block is drawn at the window where the harm begins: text from there on was held, never shown
    assert int(blocks[0].get_attribute("data-at")) == int(at_onset.get_attribute("data-start"))
    classes = at_onset.get_attribute("class").split()
    assert "held" in classes and "withheld" in classes
    assert float(at_onset.get_attribute("data-score")) >= 0.95
    shown = browser.find_element(By.ID, "client-reasoning").text
    assert conv["reasoning"].startswith(shown.strip()) and "pipe bombs" not in shown
    assert (tmp_path / "inspector-block.png").stat().st_size > 10_000


def test_page_shows_no_verdict_for_a_benign_request(browser: Any, open_inspector: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    conv = CONVERSATIONS["benign"]
    ask(browser, f"{open_inspector}/inspect", conv["prompt"])
    browser.save_screenshot(str(tmp_path / "inspector-benign.png"))
    assert browser.find_element(By.ID, "outcome").get_attribute("data-action") == "none"
    assert not browser.find_elements(By.CSS_SELECTOR, ".verdict")
    assert browser.find_element(By.ID, "client-answer").text.strip() == conv["answer"]
    wins = browser.find_elements(By.CSS_SELECTOR, "#produced .win")
    assert wins and all("withheld" not in w.get_attribute("class") for w in wins)
    assert (tmp_path / "inspector-benign.png").stat().st_size > 10_000
