"""One guarded chat completion: upstream stream → guard monitor → verified steps.

:meth:`GuardedCompletion.steps` is consumed by the SSE writer (streaming clients) or by
:func:`collect` (non-streaming clients); both see exactly the same verified text.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import httpx

from guard.detectors.base import TierCheck
from guard.events import Event, Finish, ImageMeta, Stage, Usage
from guard.monitor import Monitor
from guard.policy import HoldBack
from guard.prompt_check import check_prompt
from guard.verdict import Action, Reading, Release, Verdict
from server.api import PASSTHROUGH_FIELDS, ChatCompletionRequest
from server.errors import APIError
from server.guardrail import Guardrail
from server.upstream import ReadEnd, Upstream, UpstreamStream

log = logging.getLogger("thoughtguard")


@dataclass(frozen=True, slots=True)
class End:
    finish_reason: str
    verdict: Verdict | None  # the stopping verdict of a block, or the last steer that succeeded
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    message: str


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Nothing to send for a while, though the upstream is streaming: the guard holds text back."""


@dataclass(frozen=True, slots=True)
class Flush:
    """One upstream read is done: what its events released may go to the client in one write."""


FLUSH = Flush()
Step = Release | Verdict | Reading | End | Failure | KeepAlive | Flush


def upstream_payload(req: ChatCompletionRequest) -> dict[str, Any]:
    payload = req.model_dump(include=set(PASSTHROUGH_FIELDS), exclude_none=True)
    payload["model"] = req.model
    payload["messages"] = [
        m.model_dump(exclude_none=True, exclude={"reasoning", "reasoning_content"}) for m in req.messages
    ]
    payload["stream"] = True
    # continuous usage: tokens generated so far are known even when we abort mid-stream
    payload["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    return payload


def _word_boundary(text: str) -> str:
    cut = max(text.rfind(" "), text.rfind("\n"))
    return text if cut < 0 or text[-1:].isspace() or text[-1:] in ".!?" else text[:cut]


class GuardedCompletion:
    def __init__(
        self,
        upstream: Upstream,
        guardrail: Guardrail,
        request: ChatCompletionRequest,
        request_id: str,
    ) -> None:
        self.upstream, self.guardrail, self.request, self.request_id = upstream, guardrail, request, request_id
        options = request.thoughtguard
        self.mode = options.mode if options else None
        self.policy = guardrail.policy_named(options.policy if options else None)
        # the inspector's debug extension: each checked window's reading is a step of its own
        self.readings = bool(options and options.windows)
        self.payload = upstream_payload(request)
        self.prompt = request.prompt_text()
        self.model = request.model
        self.prompt_tokens = 0
        self.completion_tokens = 0  # summed over the first attempt and steered continuations
        self.images: list[ImageMeta] = []
        self.verdicts: list[Verdict] = []
        self.monitors: list[Monitor] = []
        self._stream: UpstreamStream | None = None
        self.connect_seconds: float | None = None
        self.prompt_blocked: Verdict | None = None
        self.prompt_check_tiers: tuple[TierCheck, ...] = ()

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    @property
    def effective_mode(self) -> HoldBack:
        return self.monitors[-1].policy.mode if self.monitors else self.policy.with_mode(self.mode).mode

    async def check_prompt(self) -> Verdict | None:
        """The optional pre-generation check; a stopping verdict means no upstream call at all."""
        result = await check_prompt(self.guardrail.prompt_detector, self.policy, self.prompt, tuple(self.images))
        self.prompt_check_tiers = result.tiers
        if result.verdict is None:
            return None
        self.verdicts.append(result.verdict)
        if result.verdict.action.stops_generation:
            self.prompt_blocked = result.verdict
        return result.verdict

    async def open(self) -> None:
        """Open the first upstream stream; errors here are still proper HTTP errors."""
        started = time.perf_counter()
        self._stream = await self.upstream.open_chat(self.payload, request_id=self.request_id)
        self.connect_seconds = time.perf_counter() - started

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()  # closing aborts the request in vLLM

    async def steps(self, *, keepalive_s: float = 0.0) -> AsyncIterator[Step]:
        """What to send, in order; with ``keepalive_s``, a :class:`KeepAlive` whenever that long has
        passed without anything to send while upstream events keep coming (a wary stream holds all
        its text, and proxies cut a response that stays silent past their idle timeout)."""
        if self.prompt_blocked is not None:
            yield End("content_filter", self.prompt_blocked, self.policy.refusal_for(self.prompt_blocked.category))
            return
        assert self._stream is not None, "open() first"
        for flag in self.verdicts:  # an advisory prompt flag rides along like stream flags
            yield flag
        monitor = self.guardrail.monitor(prompt=self.prompt, mode=self.mode, policy=self.policy,
                                         keep_readings=self.readings)
        self.monitors.append(monitor)
        shown = 0  # readings of this monitor already yielded
        attempt_tokens = 0
        last_sent = time.perf_counter()
        try:
            while True:
                stopped: Verdict | None = None
                finish_reason: str | None = None
                try:
                    async for event in _with_finish(self._stream):
                        if isinstance(event, ReadEnd):
                            yield FLUSH
                            continue
                        if isinstance(event, Usage):
                            self.prompt_tokens = self.prompt_tokens or event.prompt_tokens
                            attempt_tokens = event.completion_tokens
                            continue
                        if isinstance(event, Finish):
                            finish_reason = event.reason
                        outs = await monitor.feed(event)
                        if self.readings and monitor.readings:  # before what they released or stopped
                            for reading in monitor.readings[shown:]:
                                yield reading
                            shown = len(monitor.readings)
                        for out in outs:
                            if isinstance(out, Verdict):
                                self.verdicts.append(out)
                                if out.action.stops_generation:
                                    stopped = out
                                    break
                            yield out
                        if stopped is not None:
                            break
                        if keepalive_s:
                            now = time.perf_counter()
                            if any(isinstance(out, Release) for out in outs):
                                last_sent = now
                            elif now - last_sent >= keepalive_s:
                                last_sent = now
                                yield KeepAlive()
                except (httpx.HTTPError, APIError, ValueError) as exc:
                    log.warning("upstream stream failed request_id=%s: %r", self.request_id, exc)
                    self.completion_tokens += max(attempt_tokens, monitor.stats.tokens)
                    yield Failure(f"upstream stream failed: {type(exc).__name__}")
                    return
                await self._stream.aclose()
                self.completion_tokens += max(attempt_tokens, monitor.stats.tokens)
                attempt_tokens = 0
                if stopped is None:
                    last_steer = next((v for v in reversed(self.verdicts) if v.action is Action.STEER), None)
                    yield End(finish_reason or "stop", last_steer)
                    return
                if stopped.action is Action.STEER:
                    monitor = await self._steer(monitor)
                    shown = 0
                    if monitor is not None:
                        reflection = self.policy.steer.reflection
                        if self.effective_mode is not HoldBack.HIDDEN:
                            yield Release(Stage.REASONING, reflection)
                        continue
                policy = self.monitors[-1].policy
                yield End("content_filter", stopped, policy.refusal_for(stopped.category))
                return
        finally:
            await self.aclose()

    async def _steer(self, monitor: Monitor) -> Monitor | None:
        """Continue from the last verified-safe reasoning plus a safety reflection."""
        reflection = self.policy.steer.reflection
        prefix = _word_boundary(monitor.verified_reasoning)
        attempt = monitor.steer_attempt + 1
        payload = {
            **self.payload,
            "messages": [*self.payload["messages"], {"role": "assistant", "content": f"<think>\n{prefix}{reflection}"}],
            "continue_final_message": True,
            "add_generation_prompt": False,
        }
        # without a reasoning parser upstream, the continuation's content starts inside <think>
        inside_think = self._stream is None or not self._stream.parsed_reasoning
        try:
            self._stream = await self.upstream.open_chat(
                payload, request_id=f"{self.request_id}-steer{attempt}", implicit_think=inside_think
            )
        except APIError as exc:
            log.warning("steer continuation failed request_id=%s: %s", self.request_id, exc.message)
            return None
        nxt = self.guardrail.monitor(
            prompt=self.prompt,
            mode=self.mode,
            policy=self.policy,
            reasoning_context=prefix + reflection,
            steer_attempt=attempt,
            keep_readings=self.readings,
        )
        self.monitors.append(nxt)
        return nxt


async def _with_finish(stream: UpstreamStream) -> AsyncIterator[Event | ReadEnd]:
    """The upstream's events, ending in a Finish even when the upstream sent no finish_reason,
    so the monitor always flushes (checks, then releases or blocks) what it holds."""
    finished = False
    async for event in stream.events():
        finished = finished or isinstance(event, Finish)
        yield event
    if not finished:
        yield Finish(None)


async def collect(completion: GuardedCompletion) -> dict[str, Any]:
    """Run a completion to its end and build the non-streaming ``message``/``choice``."""
    reasoning: list[str] = []
    answer: list[str] = []
    end: End | None = None
    flags: list[Verdict] = []
    readings: list[Reading] = []
    async for step in completion.steps():
        if isinstance(step, Reading):
            readings.append(step)
        elif isinstance(step, Release):
            (reasoning if step.stage is Stage.REASONING else answer).append(step.text)
        elif isinstance(step, Verdict):
            flags.append(step)
        elif isinstance(step, End):
            end = step
        elif isinstance(step, Failure):
            raise APIError(502, step.message, type="upstream_error", code="upstream_failed")
    assert end is not None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(answer)}
    if reasoning:
        message["reasoning"] = message["reasoning_content"] = "".join(reasoning)
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": end.finish_reason, "logprobs": None}
    ext = extension(end, flags)
    if end.refusal is not None:
        message["content"] = join_refusal(message["content"], end.refusal)
        message["refusal"] = end.refusal
    if completion.readings:
        ext = {**(ext or {}), "windows": [r.as_dict() for r in readings]}
    if ext is not None:
        message["thoughtguard"] = choice["thoughtguard"] = ext
    return choice


def join_refusal(answer_so_far: str, refusal: str) -> str:
    return f"{answer_so_far}\n\n{refusal}" if answer_so_far else refusal


def extension(end: End, flags: list[Verdict]) -> dict[str, Any] | None:
    """The ``thoughtguard`` object: the stopping or steering verdict, plus advisory flags."""
    if end.verdict is None and not flags:
        return None
    ext: dict[str, Any] = end.verdict.as_extension() if end.verdict is not None else {"action": "flag"}
    if flags:
        ext["flags"] = [f.as_extension() for f in flags]
        if end.verdict is None:
            first = flags[0]
            ext.update(stage=first.stage.value, category=first.category, score=round(first.score, 4))
    return ext
