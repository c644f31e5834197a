"""The spine end to end: real vLLM (tiny scripted VL model), real gateway, the official openai SDK."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from tests.support import (
    CONVERSATIONS,
    FIGSTEP_IMAGES,
    image_data_url,
    stream_collect,
    user_message,
    wait_running_zero,
)

pytestmark = pytest.mark.vllm
BENIGN = ["benign", "benign_math", "benign_image"]


@pytest.fixture(scope="module")
def image_url() -> str:
    return image_data_url(sorted(FIGSTEP_IMAGES.glob("*.png"))[0])


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("conv_id", BENIGN)
def test_stream_benign_matches_direct_upstream(
    conv_id: str, gateway_url: str, vllm_url: str, served_model: str, image_url: str
) -> None:
    conv = CONVERSATIONS[conv_id]
    messages = user_message(conv, image_url)
    kwargs = dict(model=served_model, messages=messages, temperature=0, max_tokens=256, stream=True,
                  stream_options={"include_usage": True})
    direct = stream_collect(client(vllm_url).chat.completions.create(**kwargs))
    guarded = stream_collect(
        client(gateway_url).chat.completions.create(**kwargs, extra_headers={"X-Request-Id": f"req-{conv_id}"})
    )
    # the tiny model was trained to say exactly this
    assert direct["reasoning"].strip() == conv["reasoning"]
    assert direct["content"].strip() == conv["answer"]
    # and the guard lets benign text through byte for byte
    assert guarded["reasoning"] == direct["reasoning"]
    assert guarded["reasoning_content"] == guarded["reasoning"]  # the older key, for older clients
    assert guarded["content"] == direct["content"]
    assert guarded["finish_reason"] == "stop" and guarded["thoughtguard"] is None
    order = guarded["order"]
    assert order.index("answer") > max(i for i, k in enumerate(order) if k == "reasoning")
    assert guarded["id"] == f"chatcmpl-req-{conv_id}"
    assert guarded["usage"].completion_tokens == direct["usage"].completion_tokens
    assert guarded["usage"].prompt_tokens == direct["usage"].prompt_tokens
    assert guarded["usage"].total_tokens == direct["usage"].total_tokens


@pytest.mark.parametrize("conv_id", ["benign", "benign_image"])
def test_non_stream_benign(conv_id: str, gateway_url: str, vllm_url: str, served_model: str, image_url: str) -> None:
    conv = CONVERSATIONS[conv_id]
    kwargs = dict(model=served_model, messages=user_message(conv, image_url), temperature=0, max_tokens=256)
    direct = client(vllm_url).chat.completions.create(**kwargs)
    raw = client(gateway_url).chat.completions.with_raw_response.create(
        **kwargs, extra_headers={"X-Request-Id": "nonstream-1"}
    )
    resp = raw.parse()
    assert raw.headers["x-request-id"] == "nonstream-1"
    assert resp.id == "chatcmpl-nonstream-1"
    msg = resp.choices[0].message
    extra = msg.model_extra or {}
    assert msg.content == direct.choices[0].message.content
    assert extra["reasoning"] == (direct.choices[0].message.model_extra or {})["reasoning"]
    assert extra["reasoning_content"] == extra["reasoning"]
    assert extra["reasoning"].strip() == conv["reasoning"]
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == direct.usage.completion_tokens
    assert resp.usage.prompt_tokens == direct.usage.prompt_tokens


def test_unsafe_reasoning_is_cut_off_and_aborted(gateway_url: str, vllm_url: str, served_model: str) -> None:
    conv = CONVERSATIONS["unsafe_reasoning"]
    onset = conv["onset"]
    stream = client(gateway_url).chat.completions.create(
        model=served_model, messages=user_message(conv), temperature=0, max_tokens=512, stream=True,
        extra_body={"thoughtguard": {"mode": "buffered"}},
    )
    got = stream_collect(stream)
    assert got["finish_reason"] == "content_filter"
    ext = got["thoughtguard"]
    assert ext["action"] == "block" and ext["stage"] == "reasoning"
    assert ext["category"] and 0 <= ext["score"] <= 1
    # nothing from the unsafe part reached the client, and what did arrive is the model's own text
    assert len(got["reasoning"]) <= onset
    assert conv["reasoning"].startswith(got["reasoning"].strip()) or got["reasoning"] == ""
    assert "steel pipe" not in got["reasoning"] and "black powder" not in got["content"]
    assert got["content"]  # the refusal text rides in the final chunk
    wait_running_zero(vllm_url, within=2.0)


def test_unsafe_non_stream_carries_outcome(gateway_url: str, served_model: str) -> None:
    conv = CONVERSATIONS["unsafe_reasoning"]
    resp = client(gateway_url).chat.completions.create(
        model=served_model, messages=user_message(conv), temperature=0, max_tokens=512
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "content_filter"
    assert (choice.model_extra or {})["thoughtguard"]["action"] == "block"
    assert (choice.message.model_extra or {})["thoughtguard"]["stage"] == "reasoning"
    assert choice.message.refusal and choice.message.content.endswith(choice.message.refusal)
    assert "black powder" not in (choice.message.model_extra or {}).get("reasoning", "")


def test_upstream_down(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.support import free_port

    dead = gateway_factory(upstream_url=f"http://127.0.0.1:{free_port()}")
    r = httpx.get(f"{dead}/ready")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert httpx.get(f"{dead}/health").status_code == 200
    with pytest.raises(openai.APIStatusError) as err:
        client(dead).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["type"] == "upstream_error"


def test_models_health_ready_metrics(gateway_url: str, served_model: str) -> None:
    models = client(gateway_url).models.list()
    assert [m.id for m in models.data] == [served_model]
    assert httpx.get(f"{gateway_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{gateway_url}/ready").status_code == 200
    metrics = httpx.get(f"{gateway_url}/metrics")
    assert metrics.status_code == 200 and "thoughtguard_requests_total" in metrics.text


def test_bad_request_is_openai_shaped(gateway_url: str, served_model: str) -> None:
    for body, param in [
        ({"model": served_model, "messages": []}, "messages"),
        ({"model": served_model, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": served_model, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": served_model, "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}, "max_tokens"),
    ]:
        r = httpx.post(f"{gateway_url}/v1/chat/completions", json=body)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == param, err
    r = httpx.post(f"{gateway_url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_concurrent_streams_do_not_interfere(gateway_url: str, served_model: str) -> None:
    conv = CONVERSATIONS["benign"]
    results: list[dict] = []

    def one() -> None:
        s = client(gateway_url).chat.completions.create(
            model=served_model, messages=user_message(conv), temperature=0, max_tokens=256, stream=True
        )
        results.append(stream_collect(s))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4
    assert all(r["content"].strip() == conv["answer"] for r in results)
