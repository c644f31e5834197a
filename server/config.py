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

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from guard.policy import HoldBack


class UpstreamSettings(BaseModel):
    url: str = Field("http://127.0.0.1:8001/v1", description="OpenAI-compatible base URL of the model server")
    api_key: SecretStr | None = None
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0, description="longest wait for the next streamed chunk")
    max_connections: int = Field(512, ge=1)
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
    detector: Literal["learned", "lexicon"] = "learned"
    policy_file: Path | None = Field(None, description="YAML policy; the shipped default when unset")
    mode: HoldBack | None = Field(None, description="overrides the policy's hold-back mode for the deployment")
    guard_model: GuardModelSettings = GuardModelSettings()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THOUGHTGUARD_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    upstream: UpstreamSettings = UpstreamSettings()
    guard: GuardSettings = GuardSettings()
    drain_timeout_s: float = Field(30.0, ge=0, description="grace for in-flight streams on shutdown")

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

    def describe(self) -> dict[str, Any]:
        """Settings as printed at start: secrets come out masked by pydantic's SecretStr."""
        return self.model_dump(mode="json", exclude_none=False) | {
            "upstream": {
                **self.upstream.model_dump(mode="json"),
                "api_key": "**********" if self.upstream.api_key else None,
            }
        }
