"""One settings object for the gateway.

Sources, strongest first: explicit keyword arguments (the CLI), ``THOUGHTGUARD_*`` environment
variables (nested with ``__``), an optional YAML file (``THOUGHTGUARD_CONFIG`` or ``--config``),
then the defaults below. Every limit the gateway enforces lives here, so it is configurable and
documented in one place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from guard.detectors.stack import DEFAULT_STACK, StackName
from guard.policy import HoldBack


class UpstreamSettings(BaseModel):
    url: str = Field("http://127.0.0.1:8001/v1", description="OpenAI-compatible base URL of the model server")
    transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="how httpx reaches the upstream: through aiohttp (httpx-aiohttp; its C HTTP parser reads a"
        " busy stream's chunks in bulk) or httpx's own pure-Python transport",
    )
    api_key: SecretStr | None = None
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0, description="longest wait for the next streamed chunk")
    max_connections: int = Field(512, ge=1)
    keepalive_expiry: float = Field(
        2.0,
        ge=0,
        description="seconds an idle pooled connection is kept; keep it below the upstream's keep-alive (uvicorn/vLLM: 5)",
    )
    body_end_timeout_s: float = Field(
        0.2,
        ge=0,
        description="after [DONE], how long the body's end is awaited so the connection can be reused; 0 closes it at once",
    )
    implicit_think: bool = Field(
        False,
        description="content starts inside <think> (chat template prefills it; R1-style models without a reasoning parser)",
    )


class GuardModelSettings(BaseModel):
    url: str | None = Field(None, description="OpenAI-compatible base URL serving Llama Guard 3 or Qwen3Guard-Gen")
    model: str | None = None
    format: Literal["llama_guard_3", "qwen3guard_gen"] = "llama_guard_3"
    escalate: Literal["unsure", "always"] = "unsure"
    unsure_low: float = Field(0.2, ge=0, le=1)
    unsure_high: float = Field(0.9, ge=0, le=1)
    timeout_s: float = Field(5.0, gt=0)


class GuardSettings(BaseModel):
    enabled: bool = True
    detector: StackName = Field(
        DEFAULT_STACK,
        description="the reader: `intent` (the cross-encoder over request and thought), or the older static"
        " classifier, the lexicon, or both (the higher reading wins)",
    )
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="where the intent reader runs; `cuda` needs onnxruntime-gpu on a GPU host"
    )
    reader_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime threads of the intent reader")
    max_batch: int = Field(
        1, ge=1, le=256,
        description="checks due together across streams run as one batch of at most this many; 1 (the default) reads"
        " each window alone, as the thresholds were tuned: the int8 reader quantises activations per call, so a"
        " batched reading shifts with its batch partners, and on one CPU core batches were no faster per window",
    )
    policy_file: Path | None = Field(None, description="YAML policy; the shipped default when unset")
    mode: HoldBack | None = Field(None, description="overrides the policy's hold-back mode for the deployment")
    prompt_check: bool = Field(False, description="check the user's text before any upstream call")
    prompt_block_response: Literal["refusal", "error"] = Field(
        "refusal", description="a blocked prompt gets a 200 with a refusal, or a 400 with code content_filter"
    )
    guard_model: GuardModelSettings = GuardModelSettings()


class ImageSettings(BaseModel):
    formats: list[Literal["PNG", "JPEG", "WEBP", "GIF"]] = ["PNG", "JPEG", "WEBP", "GIF"]
    max_images: int = Field(4, ge=0, le=64, description="images per request")
    max_bytes: int = Field(10 * 2**20, ge=1, description="encoded bytes per image")
    max_total_bytes: int = Field(20 * 2**20, ge=1, description="encoded bytes of all images of a request")
    max_pixels: int = Field(16_777_216, ge=1, description="width x height, checked before decoding (bomb guard)")
    max_side: int = Field(2048, ge=0, description="downscale larger images to this side; 0 keeps the size")
    max_concurrent_decodes: int = Field(
        4, ge=1, description="images decoded at once across all requests (bounds the memory high-water mark)"
    )
    fetch_remote: bool = Field(True, description="fetch http(s) image URLs")
    max_redirects: int = Field(3, ge=0, le=10)
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    allow_private_hosts: bool = Field(False, description="permit loopback/private addresses (in-cluster image stores)")
    allowed_hosts: list[str] = Field(default_factory=list, description="if set, only these hosts are fetched")
    blocked_networks: list[str] = Field(
        ["169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32"],
        description="always refused, even with allow_private_hosts (cloud metadata endpoints)",
    )


class LimitSettings(BaseModel):
    max_body_bytes: int = Field(48 * 2**20, ge=1024, description="request body; larger is a 413")
    max_json_depth: int = Field(16, ge=4, le=256)
    max_messages: int = Field(512, ge=1)
    max_content_parts: int = Field(64, ge=1, description="content parts per message")
    max_tokens: int = Field(32768, ge=1, description="largest max_tokens / max_completion_tokens accepted")


class AuthSettings(BaseModel):
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted bearer keys (comma-separated in the env); empty = no auth"
    )
    max_concurrency_per_key: int = Field(0, ge=0, description="in-flight requests per key; 0 = unlimited")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with a 429")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v


class AuditSettings(BaseModel):
    path: Path | None = Field(None, description="JSON-lines audit log; unset = off")
    max_bytes: int = Field(50 * 2**20, ge=1024, description="rotate when the file reaches this size")
    backups: int = Field(5, ge=0, description="rotated files kept")
    capture_window: bool = Field(False, description="also write the flagged window's text (off: no text at all)")


class InspectorSettings(BaseModel):
    enabled: bool = Field(
        False,
        description="serve the inspector page (GET /inspect) and accept its debug extension (per-window readings,"
        " a named policy); off: both are refused",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="keys with the inspector right (comma-separated in the env; also accepted as API keys). When any"
        " key is configured, only these may open the page or ask for readings; with no keys at all the page is open"
        " to whoever reaches the port",
    )
    policies: dict[str, Path] = Field(
        default_factory=dict,
        description="more policies the inspector may pick by name, beside `default` (the deployment's own); each is"
        " read by the deployment's reader",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return AuthSettings._split(v)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THOUGHTGUARD_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(
        1, ge=1, le=64,
        description="gateway processes sharing the port (uvicorn's supervisor; a killed worker is replaced); one"
        " managed vLLM serves them all. 1 on small machines; about one per core the gateway may use on a GPU host",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    upstream: UpstreamSettings = UpstreamSettings()
    guard: GuardSettings = GuardSettings()
    images: ImageSettings = ImageSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
    audit: AuditSettings = AuditSettings()
    inspector: InspectorSettings = InspectorSettings()
    metrics_port: int | None = Field(None, ge=1, le=65535, description="also serve /metrics on this port")
    drain_timeout_s: float = Field(30.0, ge=0, description="grace for in-flight streams on shutdown")
    sse_keepalive_s: float = Field(
        15.0, ge=0,
        description="an SSE comment after this many seconds with nothing to send while the upstream streams on (the"
        " guard holds text back), so proxies keep the response open; 0: off",
    )
    malloc_mmap_threshold: int = Field(
        128 * 2**10,
        ge=0,
        description="glibc only: blocks at least this large are mmapped and given back to the OS when freed "
        "(image buffers); 0 keeps glibc's sliding threshold, which lets the heap keep its high-water mark",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("THOUGHTGUARD_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @classmethod
    def with_overrides(cls, overrides: dict[str, Any]) -> "Settings":
        """Settings from env and config file, then ``overrides`` (the CLI's flags) on top: a flag
        wins, but a nested section keeps the keys the env or the file set."""
        data = cls().model_dump()
        for key, value in overrides.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) else value
        return cls.model_validate(data)

    def describe(self) -> dict[str, Any]:
        """Settings as printed at start: secrets come out masked by pydantic's SecretStr."""
        return self.model_dump(mode="json", exclude_none=False) | {
            "upstream": {
                **self.upstream.model_dump(mode="json"),
                "api_key": "**********" if self.upstream.api_key else None,
            },
            "auth": {**self.auth.model_dump(mode="json"), "api_keys": f"<{len(self.auth.api_keys)} keys>"},
            "inspector": {**self.inspector.model_dump(mode="json"),
                          "api_keys": f"<{len(self.inspector.api_keys)} keys>"},
        }
