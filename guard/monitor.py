"""The streaming monitor: one per request, fed event by event, releasing only verified text.

Text of each stage (reasoning, answer) accumulates until a window is due: at a sentence
boundary once ``min_tokens`` wait, or every ``every_tokens``. The window (new text plus a little
already-checked context) goes to the detector. Safe text is released; an unsafe reading is held
as *suspect* until the debounce resolves it, so neither a single noisy window blocks nor does a
suspect window leak while we wait for the next one; a doubtful reading (between ``hold`` and
``unsafe``) is held the same way without counting towards a block. A stream whose request reads
as harmful (``thresholds.wary``), or that has had a doubtful window (``thresholds.wary_window``),
is *wary*: its verified text waits until the whole stream has been checked, because a detector
that cuts a harm a few windows late has by then released its opening; a wary stream that is cut
releases nothing more. Any other stream keeps its last ``lookahead_windows`` verified windows back
until as many later windows have passed, for the same reason at a bounded cost. The server and
the offline evaluator drive this same class.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from guard.detectors.base import Detector, TierCheck, Window
from guard.events import Event, Finish, Stage, TextDelta
from guard.policy import HoldBack, Policy
from guard.verdict import Action, Detection, Reading, Release, Verdict

Output = Release | Verdict
_BOUNDARY = re.compile(r"[.!?;:]\s*$|\n")


@dataclass
class MonitorStats:
    checks: int = 0
    check_seconds: list[float] = field(default_factory=list)
    tier_checks: list[TierCheck] = field(default_factory=list)  # per tier of each check (cascades: 1-2)
    holdback_seconds: list[float] = field(default_factory=list)  # one per released token
    tokens: int = 0
    released_tokens: int = 0
    leaked_tokens: int = 0  # live mode: tokens forwarded unchecked that a later block covered
    detector_errors: int = 0  # errors and timeouts; ``tier_checks`` says which tier failed
    fail_open: int = 0
    fail_closed: int = 0


@dataclass
class _Track:
    stage: Stage
    checked: str = ""
    pending: list[tuple[str, float]] = field(default_factory=list)
    suspect: list[tuple[str, float]] = field(default_factory=list)
    streak: int = 0
    read: int = 0  # characters of this stage read so far (what steering continued from not counted)
    # the reading that made ``suspect`` suspect; per track, so a reasoning suspect never
    # settles with an answer window's detection or vice versa
    suspect_detection: tuple[Detection, Window] | None = None

    def text(self, pieces: list[tuple[str, float]]) -> str:
        return "".join(p for p, _ in pieces)


class Monitor:
    def __init__(
        self,
        detector: Detector,
        policy: Policy,
        *,
        prompt: str = "",
        reasoning_context: str = "",
        steer_attempt: int = 0,
        clock: Callable[[], float] = time.perf_counter,
        keep_readings: bool = False,
    ) -> None:
        self.detector, self.policy, self.prompt = detector, policy, prompt
        self.steer_attempt = steer_attempt
        self.clock = clock
        self.stats = MonitorStats()
        self.verdicts: list[Verdict] = []
        self.stopped: Verdict | None = None
        # a steered continuation starts from reasoning that has already been checked and reflected on
        self.self_flagged = steer_attempt > 0
        self._tracks = {s: _Track(s) for s in (Stage.REASONING, Stage.ANSWER)}
        self._tracks[Stage.REASONING].checked = reasoning_context
        self._flagged: set[tuple[Stage, str | None]] = set()
        self.wary: bool | None = None  # read from the request on the first event
        self._withheld: list[tuple[Stage, list[tuple[str, float]]]] = []
        # every checked window and what it did, for the inspector and the HTML report (off in serving)
        self.readings: list[Reading] | None = [] if keep_readings else None

    @property
    def verified_reasoning(self) -> str:
        """The reasoning a steer may continue from: checked, less what still waits for its lookahead
        windows (the stretch just before a cut is where a harm the detector caught late began)."""
        return self._confirmed(Stage.REASONING)

    @property
    def verified_answer(self) -> str:
        return self._confirmed(Stage.ANSWER)

    def _confirmed(self, stage: Stage) -> str:
        checked = self._tracks[stage].checked
        keep = self.policy.thresholds.lookahead_windows
        waiting = sum(len(p) for st, pieces in (self._withheld[-keep:] if keep else []) if st is stage
                      for p, _ in pieces)
        return checked[:len(checked) - waiting]

    async def feed(self, event: Event) -> list[Output]:
        if self.stopped is not None:
            return []
        if self.wary is None:
            self.wary = await self._read_request()
        if isinstance(event, Finish):
            out = await self._flush(Stage.REASONING)
            out += await self._flush(Stage.ANSWER)
            return out if self.stopped is not None else out + self._emit(final=True)
        if not isinstance(event, TextDelta) or not event.text or event.stage not in self._tracks:
            return []  # prompt text is checked before generation (guard.prompt_check), not here
        out: list[Output] = []
        if event.stage is Stage.ANSWER:
            out += await self._flush(Stage.REASONING)
            if self.stopped is not None:
                return out
        track = self._tracks[event.stage]
        now = self.clock()
        self.stats.tokens += 1
        track.pending.append((event.text, now))
        if self.policy.mode is HoldBack.LIVE:
            out.append(Release(event.stage, event.text))
            self.stats.released_tokens += 1
        if self._due(track):
            out += await self._check(track, final=False)
        return out

    async def _read_request(self) -> bool:
        """Whether this stream is wary; one check of the request, before any of its text is judged."""
        level = self.policy.thresholds.wary
        if level is None or not self.prompt or self.policy.mode is HoldBack.LIVE:
            return False
        det = await self._detect(Window(Stage.PROMPT, self.prompt, prompt=self.prompt))
        if det.error is not None:  # unread: as wary as a harmful request when failing closed
            return self.policy.failure.mode == "closed"
        return det.unsafe >= level

    async def _flush(self, stage: Stage) -> list[Output]:
        track = self._tracks[stage]
        if self.stopped is not None or not (track.pending or track.suspect):
            return []
        return await self._check(track, final=True)

    def _due(self, track: _Track) -> bool:
        n = len(track.pending)
        win = self.policy.window
        if n >= win.every_tokens:
            return True
        return n >= win.min_tokens and bool(_BOUNDARY.search(track.pending[-1][0]))

    async def _detect(self, window: Window) -> Detection:
        start = self.clock()
        tiers: list[TierCheck] = []
        try:
            found = await asyncio.wait_for(
                self.detector.check([window], tiers), timeout=self.policy.failure.timeout_s
            )
            return found[0]
        except Exception as exc:  # a detector failure must never take the stream down
            self.stats.detector_errors += 1
            return Detection(unsafe=float("nan"), detector=self.detector.name, error=repr(exc))
        finally:
            self.stats.checks += 1
            self.stats.check_seconds.append(self.clock() - start)
            self.stats.tier_checks += tiers

    async def _check(self, track: _Track, *, final: bool) -> list[Output]:
        if not track.pending:
            # only a suspect remains: the stream ended before the debounce could resolve it
            return self._settle_suspect(track)
        ctx_chars = self.policy.window.context_chars
        context = (track.checked + track.text(track.suspect))[-ctx_chars:] if ctx_chars else ""
        window = Window(track.stage, track.text(track.pending), context, self.prompt)
        det = await self._detect(window)
        start = track.read
        track.read += len(window.text)
        out = self._judge(track, det, window, final=final)
        if self.readings is not None:
            self.readings.append(Reading(
                track.stage, start, track.read, window.text, self.stats.tokens, det.unsafe, det.category,
                det.refusal, self._decision(track, det, out), self.steer_attempt,
            ))
        return out

    def _decision(self, track: _Track, det: Detection, out: list[Output]) -> str:
        """What the window just judged did, read off the state it left."""
        if self.stopped is not None:
            return self.stopped.action.value
        if any(isinstance(o, Verdict) for o in out):
            return Action.FLAG.value
        if det.error is not None:
            return "error"
        if track.suspect and not track.pending:
            return "suspect" if track.suspect_detection is not None else "hold"
        return "release"

    def _judge(self, track: _Track, det: Detection, window: Window, *, final: bool) -> list[Output]:
        if det.error is not None:
            if self.policy.failure.mode == "closed":
                self.stats.fail_closed += 1
                return self._fire(track, Action.BLOCK, det, window, reason="detector_error")
            self.stats.fail_open += 1
            track.streak = 0
            return self._release(track, include_suspect=True)

        th = self.policy.thresholds
        if th.wary_window is not None and det.unsafe >= th.wary_window and self.policy.mode is not HoldBack.LIVE:
            self.wary = True  # a doubtful stretch: what follows may be the harm the next windows confirm
        if track.stage is Stage.REASONING and det.refusal >= th.refusal:
            self.self_flagged = True
        if (
            track.stage is Stage.ANSWER
            and self.self_flagged
            and det.refusal < th.refusal
            and det.unsafe >= th.collapse
        ):
            return self._decide(track, det, window, reason="self_flagged_then_complied")
        if det.unsafe >= th.high and self.stats.tokens >= th.high_min_tokens:
            return self._decide(track, det, window, reason="high_score")
        if det.unsafe >= th.unsafe:
            track.streak += 1
            if track.streak >= th.consecutive:
                return self._decide(track, det, window, reason="consecutive_windows")
            if final and th.end_of_stream == "block":
                return self._decide(track, det, window, reason="unsafe_at_end")
            track.suspect += track.pending
            track.pending = []
            track.suspect_detection = (det, window)
            return [] if not final else self._release(track, include_suspect=True)
        track.streak = 0
        held = len(track.suspect) + len(track.pending)
        if det.unsafe >= th.hold and not final and held <= th.hold_max_tokens:
            # not unsafe enough to count, too doubtful to show yet: keep it until a clearer
            # window follows (or a block makes it moot), so the opening of a harm rarely leaks
            track.suspect += track.pending
            track.pending = []
            track.suspect_detection = None
            return []
        return self._release(track, include_suspect=True)

    def _settle_suspect(self, track: _Track) -> list[Output]:
        if self.policy.thresholds.end_of_stream == "block" and track.suspect_detection is not None:
            det, window = track.suspect_detection
            return self._decide(track, det, window, reason="unsafe_at_end")
        return self._release(track, include_suspect=True)

    def _decide(self, track: _Track, det: Detection, window: Window, *, reason: str) -> list[Output]:
        action = self.policy.action_for(det.category, track.stage)
        if action is Action.STEER and (
            track.stage is not Stage.REASONING or self.steer_attempt >= self.policy.steer.max_attempts
        ):
            action = Action.BLOCK  # steering continues reasoning; out of attempts, refuse instead
        if action.stops_generation:
            return self._fire(track, action, det, window, reason=reason)
        out: list[Output] = []
        if action is Action.FLAG and (track.stage, det.category) not in self._flagged:
            self._flagged.add((track.stage, det.category))
            out.append(self._verdict(action, track.stage, det, window, reason))
        track.streak = 0
        return out + self._release(track, include_suspect=True)

    def _fire(self, track: _Track, action: Action, det: Detection, window: Window, *, reason: str) -> list[Output]:
        held = len(track.pending) + len(track.suspect)
        if self.policy.mode is HoldBack.LIVE:
            self.stats.leaked_tokens += held
        track.pending, track.suspect = [], []
        verdict = self._verdict(action, track.stage, det, window, reason)
        self.stopped = verdict
        return [verdict]

    def _verdict(self, action: Action, stage: Stage, det: Detection, window: Window, reason: str) -> Verdict:
        score = det.unsafe if det.unsafe == det.unsafe else 1.0  # NaN from a failed detector
        verdict = Verdict(
            action=action,
            stage=stage,
            category=det.category,
            score=score,
            detector=det.detector or self.detector.name,
            position=self.stats.tokens,
            reason=reason,
            window=window.full,
        )
        self.verdicts.append(verdict)
        return verdict

    def _release(self, track: _Track, *, include_suspect: bool) -> list[Output]:
        pieces = (track.suspect if include_suspect else []) + track.pending
        track.suspect, track.pending = ([] if include_suspect else track.suspect), []
        if not pieces:
            return []
        text = track.text(pieces)
        track.checked += text
        if self.policy.mode is HoldBack.LIVE:
            return []  # already forwarded on arrival
        if self.policy.mode is HoldBack.HIDDEN and track.stage is Stage.REASONING:
            return []
        self._withheld.append((track.stage, pieces))
        return [] if self.wary else self._emit()

    def _emit(self, *, final: bool = False) -> list[Output]:
        """Release the verified text kept so far, in stream order (a wary stream's, at its end), less
        the last ``lookahead_windows`` windows' until the stream ends."""
        keep = 0 if final else self.policy.thresholds.lookahead_windows
        ready = self._withheld[:-keep] if keep else self._withheld
        self._withheld = self._withheld[len(ready):]
        out: list[Output] = []
        now = self.clock()
        for stage, pieces in ready:
            self.stats.holdback_seconds.extend(now - t for _, t in pieces)
            self.stats.released_tokens += len(pieces)
            text = "".join(p for p, _ in pieces)
            if out and out[-1].stage is stage:
                out[-1] = Release(stage, out[-1].text + text)
            else:
                out.append(Release(stage, text))
        return out
