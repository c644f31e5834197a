"""Image decoding under limits, the decoder fuzzed with truncated and corrupted files, and the bound on concurrent decodes."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from server import images
from server.api import ChatCompletionRequest
from server.config import ImageSettings
from server.images import DecodedImage, ImageRejected, decode_image

LIMITS = ImageSettings()


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_accepted_formats_are_normalised_to_png(fmt: str) -> None:
    raw = encode(Image.new("RGB", (40, 30), (200, 10, 10)), fmt)
    out = decode_image(raw, LIMITS)
    assert out.meta.format == fmt and (out.meta.width, out.meta.height) == (40, 30)
    assert Image.open(io.BytesIO(out.png)).format == "PNG"
    assert len(out.meta.sha256) == 64 and out.meta.bytes == len(raw)


def test_gif_first_frame_only() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = Image.open(io.BytesIO(decode_image(buf.getvalue(), LIMITS).png))
    assert getattr(out, "n_frames", 1) == 1
    assert out.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_exif_orientation_applied_and_metadata_dropped() -> None:
    img = Image.new("RGB", (60, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    exif[0x010F] = "SecretCamera"
    out = decode_image(encode(img, "JPEG", exif=exif), LIMITS)
    assert (out.meta.width, out.meta.height) == (20, 60)
    decoded = Image.open(io.BytesIO(out.png))
    assert not decoded.getexif() and "exif" not in decoded.info


def test_downscale_to_max_side() -> None:
    out = decode_image(encode(Image.new("RGB", (3000, 1500)), "PNG"), ImageSettings(max_side=1000))
    assert (out.meta.width, out.meta.height) == (1000, 500)


def test_format_allow_list() -> None:
    with pytest.raises(ImageRejected) as err:
        decode_image(encode(Image.new("RGB", (4, 4)), "BMP"), LIMITS)
    assert err.value.reason == "format"
    with pytest.raises(ImageRejected):
        decode_image(encode(Image.new("RGB", (4, 4)), "GIF"), ImageSettings(formats=["PNG"]))


def test_decompression_bomb_refused_before_decoding() -> None:
    import resource
    import time

    bomb = encode(Image.new("1", (30000, 30000)), "PNG", optimize=True)  # 900 Mpx in a few hundred KB
    assert len(bomb) < 2_000_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with pytest.raises(ImageRejected) as err:
        decode_image(bomb, LIMITS)
    assert err.value.reason == "too_many_pixels"
    assert time.perf_counter() - t < 1.0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 50_000  # decoding it would take ~900 MB


SEED = encode(Image.new("RGB", (16, 16), (10, 200, 30)), "PNG")
SEED_JPEG = encode(Image.new("RGB", (16, 16), (10, 200, 30)), "JPEG")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([SEED, SEED_JPEG]),
    st.integers(min_value=0, max_value=len(SEED)),
    st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=8),
)
def test_truncated_or_corrupted_images_never_crash(seed: bytes, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(seed[:cut] if cut else seed)
    for pos, val in flips:
        if data:
            data[pos % len(data)] = val
    try:
        out = decode_image(bytes(data), LIMITS)
    except ImageRejected as exc:
        assert exc.reason in {"undecodable", "format", "too_many_pixels"}
    else:
        assert isinstance(out, DecodedImage) and out.meta.width > 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_are_rejected_cleanly(data: bytes) -> None:
    with pytest.raises(ImageRejected):
        decode_image(b"\x89PNG\r\n\x1a\n" + data if data[:1] == b"\x00" else data, LIMITS)


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrent_decodes_are_bounded(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, lock = 0, 0, threading.Lock()
    real = images.decode_image

    def counting(raw: bytes, limits: ImageSettings) -> DecodedImage:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)  # long enough for every request to be waiting at once
            return real(raw, limits)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(images, "decode_image", counting)
    url = "data:image/png;base64," + base64.b64encode(encode(Image.new("RGB", (8, 8)), "PNG")).decode()

    def request() -> ChatCompletionRequest:
        return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what is this?"}]}]})

    async def run() -> list[list[object]]:
        resolver = images.ImageResolver(ImageSettings(max_concurrent_decodes=limit))
        try:
            return await asyncio.gather(*(resolver.resolve(request()) for _ in range(8)))  # type: ignore[arg-type]
        finally:
            await resolver.aclose()

    metas = asyncio.run(run())
    assert peak == limit  # 8 requests at once, never more than the limit decoding
    assert all(len(m) == 1 and m[0].format == "PNG" for m in metas)  # type: ignore[attr-defined]
