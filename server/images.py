"""Resolve every image of a request before the upstream sees it.

``data:`` URLs are decoded, ``http(s)`` URLs fetched safely (:mod:`server.fetch`); then Pillow
decodes under limits (format allow-list, pixel cap checked from the header before any pixel
is decoded, EXIF orientation applied, metadata dropped, optional downscale) and the image is
re-encoded and forwarded as a PNG data URL. What the guard learns of each image is an
:class:`guard.events.ImageMeta`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import re
import warnings
from dataclasses import dataclass

import anyio
import httpx
from PIL import Image, ImageOps

from guard.events import ImageMeta
from server.api import ChatCompletionRequest, ImagePart
from server.config import ImageSettings
from server.errors import APIError
from server.fetch import FetchError, FetchPolicy, fetch

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[\w.-]+)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S)


class ImageRejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    png: bytes
    meta: ImageMeta


def decode_image(raw: bytes, settings: ImageSettings) -> DecodedImage:
    """Decode and normalise one image, or raise :class:`ImageRejected`. CPU-bound: run in a thread."""
    digest = hashlib.sha256(raw).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            fmt = (img.format or "").upper()
            if fmt not in settings.formats:
                raise ImageRejected("format", f"image format {fmt or 'unknown'} is not accepted (allowed: {', '.join(settings.formats)})")
            width, height = img.size
            if width * height > settings.max_pixels:
                raise ImageRejected("too_many_pixels", f"image has {width}x{height} pixels, more than {settings.max_pixels}")
            img.seek(0)  # animated GIF / WebP: the first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode not in ("RGB", "RGBA", "L"):
                img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
            if settings.max_side and max(img.size) > settings.max_side:
                img.thumbnail((settings.max_side, settings.max_side))
            out = io.BytesIO()
            img.save(out, format="PNG")  # a fresh file: EXIF, ICC text chunks and the like are gone
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_many_pixels", "image exceeds the decompression limit") from exc
    except (OSError, ValueError, SyntaxError, EOFError, Image.UnidentifiedImageError) as exc:
        raise ImageRejected("undecodable", f"image could not be decoded: {type(exc).__name__}") from exc
    return DecodedImage(out.getvalue(), ImageMeta(img.size[0], img.size[1], fmt, digest, len(raw)))


def _decode_data_url(url: str, max_bytes: int) -> bytes:
    m = _DATA_URL.match(url)
    if not m or not m.group("b64"):
        raise ImageRejected("data_url", "data URLs must be base64 encoded (data:image/...;base64,...)")
    data = m.group("data")
    if len(data) * 3 // 4 > max_bytes:
        raise ImageRejected("too_large", f"image is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRejected("data_url", "data URL is not valid base64") from exc


class ImageResolver:
    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings
        self.policy = FetchPolicy(
            max_bytes=settings.max_bytes,
            max_redirects=settings.max_redirects,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            allow_private=settings.allow_private_hosts,
            allowed_hosts=tuple(settings.allowed_hosts),
            blocked_networks=tuple(ipaddress.ip_network(n) for n in settings.blocked_networks),
        )
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            trust_env=False,
        )
        # each decode holds the encoded bytes, the pixels and the PNG being written: bounding
        # how many run at once bounds the memory a burst of image requests can take
        self._decodes = anyio.CapacityLimiter(settings.max_concurrent_decodes)

    async def resolve(self, request: ChatCompletionRequest) -> list[ImageMeta]:
        """Replace every image part's URL by a normalised data URL; return what is known of each."""
        parts = [
            (i, j, part)
            for i, msg in enumerate(request.messages)
            if isinstance(msg.content, list)
            for j, part in enumerate(msg.content)
            if isinstance(part, ImagePart)
        ]
        if len(parts) > self.settings.max_images:
            raise APIError(400, f"at most {self.settings.max_images} images per request", param="messages", code="too_many_images")
        metas: list[ImageMeta] = []
        total = 0
        for i, j, part in parts:
            param = f"messages[{i}].content[{j}].image_url"
            try:
                raw = await self._load(part.image_url.url)
                total += len(raw)
                if total > self.settings.max_total_bytes:
                    raise ImageRejected("too_large", f"images total more than {self.settings.max_total_bytes} bytes")
                decoded = await anyio.to_thread.run_sync(decode_image, raw, self.settings, limiter=self._decodes)
            except ImageRejected as exc:
                raise APIError(400, f"{param}: {exc}", param=param, code=f"image_{exc.reason}") from exc
            except FetchError as exc:
                raise APIError(400, f"{param}: {exc}", param=param, code=f"image_fetch_{exc.reason}") from exc
            part.image_url.url = "data:image/png;base64," + base64.b64encode(decoded.png).decode()
            metas.append(decoded.meta)
        return metas

    async def _load(self, url: str) -> bytes:
        if url.startswith("data:"):
            return _decode_data_url(url, self.settings.max_bytes)
        if url.startswith(("http://", "https://")):
            if not self.settings.fetch_remote:
                raise ImageRejected("remote_disabled", "remote image URLs are disabled on this gateway")
            body, _ = await fetch(self.client, url, self.policy)
            return body
        raise ImageRejected("scheme", "image_url must be a data: URL or an http(s) URL")

    async def aclose(self) -> None:
        await self.client.aclose()
