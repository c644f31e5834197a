from guard.detectors.base import Detector, Window
from guard.detectors.cascade import Cascade
from guard.detectors.classifier import LearnedDetector
from guard.detectors.guard_model import GuardModelDetector
from guard.detectors.lexicon import LexiconDetector

__all__ = ["Cascade", "Detector", "GuardModelDetector", "LearnedDetector", "LexiconDetector", "Window"]
