"""Request and response models of the OpenAI-compatible API (the HTTP boundary)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from guard.policy import HoldBack

# Fields forwarded to the upstream as they are. Anything else the client sends is either
# handled here (stream, n, the thoughtguard extension) or rejected, so nothing reaches vLLM
# that we have not decided to allow.
PASSTHROUGH_FIELDS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "top_k",
    "min_p",
    "min_tokens",
    "logit_bias",
    "response_format",
    "ignore_eos",
    "chat_template_kwargs",
    "user",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Model):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] = "auto"


class TextPart(_Model):
    type: Literal["text"]
    text: str


class ImagePart(_Model):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    # clients replaying a conversation send the reasoning back; it is dropped before the upstream
    reasoning: str | None = None
    reasoning_content: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))


class StreamOptions(_Model):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class GuardOptions(_Model):
    """The ``thoughtguard`` request extension."""

    mode: HoldBack | None = None
    # the inspector's debug extension: refused unless the inspector is on and the key has its right
    windows: bool = Field(False, description="stream each checked window's reading as a `thoughtguard` chunk")
    policy: str | None = Field(None, description="a policy by name, from those the server has (`default` and"
                               " `inspector.policies`)", max_length=64)

    @property
    def debug(self) -> bool:
        return self.windows or self.policy is not None


class ChatCompletionRequest(_Model):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    min_tokens: int | None = Field(None, ge=0)
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    ignore_eos: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    user: str | None = None
    # accepted for SDK compatibility, not forwarded
    store: bool | None = None
    metadata: dict[str, str] | None = None
    thoughtguard: GuardOptions | None = None

    @field_validator("n")
    @classmethod
    def _single_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported: the guard follows one generation per request")
        return v

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop sequences")
        return v

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def prompt_text(self) -> str:
        """The latest user turn: what the guard checks and its windows are read against."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text()
        return ""


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def chat_request_openapi() -> dict[str, Any]:
    """The request body for the OpenAPI document (the route reads the raw body itself)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
        }
    }


def openapi_components() -> dict[str, Any]:
    schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "ChatCompletionRequest": schema}
