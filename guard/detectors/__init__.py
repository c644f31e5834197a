from guard.detectors.base import Detector, Window
from guard.detectors.cascade import Cascade
from guard.detectors.lexicon import LexiconDetector

__all__ = ["Cascade", "Detector", "LexiconDetector", "Window"]
