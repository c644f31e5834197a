"""thoughtguard's guard: a pure library that reads a reasoning model's stream and decides.

Text and events in (:mod:`guard.events`), verified text and verdicts out (:mod:`guard.verdict`).
The server drives :class:`Monitor` per request; the offline evaluator drives the same class.
"""

from guard.detectors.base import Detector, Window
from guard.events import Event, Finish, Stage, TextDelta, Usage
from guard.monitor import Monitor, MonitorStats
from guard.policy import HoldBack, Policy
from guard.verdict import Action, Detection, Release, Verdict

__all__ = [
    "Action",
    "Detection",
    "Detector",
    "Event",
    "Finish",
    "HoldBack",
    "Monitor",
    "MonitorStats",
    "Policy",
    "Release",
    "Stage",
    "TextDelta",
    "Usage",
    "Verdict",
    "Window",
]
