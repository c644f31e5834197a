"""Images and hostile input through the real gateway and the real vLLM (tiny VL model)."""

from __future__ import annotations

import base64
import io
from typing import Any, Callable, Iterator

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import CONVERSATIONS, FIGSTEP_IMAGES, ThreadedServer, image_data_url

pytestmark = pytest.mark.vllm
PROMPT = CONVERSATIONS["benign_image"]["prompt"]
FIGSTEP = sorted(FIGSTEP_IMAGES.glob("*.png"))


def encoded(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_host() -> Iterator[ThreadedServer]:
    """A local image server: real files, redirects, an endless body."""

    async def png(request: Any) -> Response:
        return Response(FIGSTEP[1].read_bytes(), media_type="image/png")

    async def hop(request: Any) -> Response:
        n = int(request.path_params["n"])
        target = request.query_params.get("to", "/figstep.png")
        return RedirectResponse(target if n <= 0 else f"/hop/{n - 1}?to={target}", status_code=302)

    async def endless(request: Any) -> Response:
        async def body() -> Any:
            for _ in range(10_000):
                yield b"\0" * 65536

        return StreamingResponse(body(), media_type="image/png")

    app = Starlette(routes=[Route("/figstep.png", png), Route("/hop/{n}", hop), Route("/endless.png", endless)])
    srv = ThreadedServer(app).start()
    yield srv
    srv.stop()


def chat(base: str, model: str, url: str, **extra: Any) -> httpx.Response:
    body = {
        "model": model,
        "temperature": 0,
        "max_tokens": 128,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": PROMPT}, {"type": "image_url", "image_url": {"url": url, **extra}}]}],
    }
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)


def answer_of(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_data_url_formats(fmt: str, gateway_url: str, served_model: str) -> None:
    url = f"data:image/{fmt.lower()};base64," + base64.b64encode(encoded(fmt)).decode()
    assert answer_of(chat(gateway_url, served_model, url, detail="low")).strip() == CONVERSATIONS["benign_image"]["answer"]


@pytest.mark.parametrize("path", FIGSTEP[:3], ids=lambda p: p.name)
def test_figstep_images_as_data_urls(path: Any, gateway_url: str, served_model: str) -> None:
    assert answer_of(chat(gateway_url, served_model, image_data_url(path))).strip()


def test_remote_image_from_allowed_private_host(
    gateway_factory: Callable[..., str], image_host: ThreadedServer, served_model: str
) -> None:
    base = gateway_factory(images={"allow_private_hosts": True})
    assert answer_of(chat(base, served_model, f"{image_host.url}/figstep.png")).strip()
    metrics = httpx.get(f"{base}/metrics").text
    assert 'thoughtguard_images_total{format="PNG"' in metrics


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/figstep.png",
        "http://localhost:{port}/figstep.png",  # a DNS name resolving to loopback
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/figstep.png",
        "http://10.0.0.1/x.png",
    ],
)
def test_ssrf_refused_by_default(url: str, gateway_url: str, image_host: ThreadedServer, served_model: str) -> None:
    r = chat(gateway_url, served_model, url.format(port=image_host.port))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "messages[0].content[1].image_url"
    assert err["code"] == "image_fetch_forbidden_address"


def test_redirect_to_blocked_address_is_checked_per_hop(
    gateway_factory: Callable[..., str], image_host: ThreadedServer, served_model: str
) -> None:
    # private hosts allowed (in-cluster), but 127.0.0.2 stands for a blocked network: the first hop
    # is fine, the redirect target must be refused on its own check
    base = gateway_factory(images={"allow_private_hosts": True, "blocked_networks": ["127.0.0.2/32"]})
    ok = chat(base, served_model, f"{image_host.url}/hop/1")
    assert ok.status_code == 200, ok.text
    r = chat(base, served_model, f"{image_host.url}/hop/0?to=http://127.0.0.2:{image_host.port}/figstep.png")
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_fetch_forbidden_address"


def test_too_many_redirects_and_byte_cap(
    gateway_factory: Callable[..., str], image_host: ThreadedServer, served_model: str
) -> None:
    base = gateway_factory(images={"allow_private_hosts": True, "max_redirects": 2, "max_bytes": 1_000_000})
    r = chat(base, served_model, f"{image_host.url}/hop/5")
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_fetch_redirects"
    r = chat(base, served_model, f"{image_host.url}/endless.png")
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_fetch_too_large"


def test_bomb_bad_base64_and_too_many_images(gateway_url: str, served_model: str) -> None:
    buf = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buf, format="PNG", optimize=True)
    bomb = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = chat(gateway_url, served_model, bomb)
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_too_many_pixels"
    r = chat(gateway_url, served_model, "data:image/png;base64,@@@notbase64")
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_data_url"
    r = chat(gateway_url, served_model, "ftp://example.com/x.png")
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_scheme"
    img = {"type": "image_url", "image_url": {"url": image_data_url(FIGSTEP[0])}}
    body = {"model": served_model, "messages": [{"role": "user", "content": [img] * 5}]}
    r = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_images"
    # and the server keeps serving
    assert answer_of(chat(gateway_url, served_model, image_data_url(FIGSTEP[0]))).strip()
    metrics = httpx.get(f"{gateway_url}/metrics").text
    assert 'thoughtguard_image_rejections_total{model="%s",reason="too_many_pixels"}' % served_model in metrics
