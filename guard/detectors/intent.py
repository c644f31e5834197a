"""The default detector: a cross-encoder that reads the request and the recent thought together.

all-MiniLM-L6-v2, fine-tuned by :mod:`guard.training.intent` on real and written reasoning
traces, reads ``[CLS] request [SEP] window [SEP]`` (:mod:`guard.detectors.pairs`) with attention
over word order, so "I'll explain why I won't help build a bomb" and "I'll list the parts for the
bomb" read differently. It runs without torch: an int8 ONNX graph in ONNX Runtime, one thread by
default (``threads``), on the CPU or, where ONNX Runtime's CUDA provider is installed, a GPU
(``device``). Checks run in a worker thread, off the event loop
(:class:`~guard.detectors.batcher.MicroBatcher`); those that fall due together across streams run as
one batch of up to ``max_batch``. The default is 1: int8 activations are quantised per call, so a
batched reading moves with its batch partners (by up to 0.4 on a mid-range window), and on one
CPU core a batch was no faster per window than single reads (docs/benchmarks.md).

Outputs per window: ``unsafe`` (the probability that the text works towards harm) and the
MLCommons category of that harm; it has no refusal output, so the monitor's collapse rule (a
self-flag, then compliance) is the reader's own job here: it reads the compliance directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from tokenizers import Tokenizer

from guard.detectors.base import Detector, Window
from guard.detectors.batcher import MicroBatcher
from guard.detectors.pairs import PairEncoder, PairLimits
from guard.verdict import Detection

INTENT_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "intent"
MODEL_FILE = "reader.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "reader.json"
Device = Literal["cpu", "cuda"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class IntentReader:
    """The synchronous model: pairs in, (unsafe probability, category index) out."""

    def __init__(self, directory: str | Path | None = None, *, threads: int = 1, device: Device = "cpu") -> None:
        import onnxruntime as ort

        directory = Path(directory or INTENT_DIR)
        self.meta = json.loads((directory / META_FILE).read_text())
        limits = PairLimits(int(self.meta["max_tokens"]), int(self.meta["request_tokens"]))
        self.encoder = PairEncoder(Tokenizer.from_file(str(directory / TOKENIZER_FILE)), limits)
        self.categories: tuple[str, ...] = tuple(self.meta["categories"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("guard.device=cuda needs onnxruntime-gpu (CUDAExecutionProvider is not available)")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(directory / MODEL_FILE), options, providers=providers)
        self._inputs = {i.name for i in self.session.get_inputs()}

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """(n, 1 + categories) raw logits: the unsafe logit first."""
        feed = {k: v for k, v in self.encoder.batch(list(pairs)).items() if k in self._inputs}
        return self.session.run(None, feed)[0]

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        out = self.logits(pairs)
        unsafe = _sigmoid(out[:, 0].astype(np.float64))
        return [(float(u), int(c)) for u, c in zip(unsafe, out[:, 1:].argmax(axis=1))]


class IntentDetector(Detector):
    name = "intent"

    def __init__(self, directory: str | Path | None = None, *, threads: int = 1, device: Device = "cpu",
                 max_batch: int = 1) -> None:
        self.reader = IntentReader(directory, threads=threads, device=device)
        self.batcher: MicroBatcher[tuple[str, str], tuple[float, int]] = MicroBatcher(
            self.reader, max_batch=max_batch, name="intent-reader")

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        readings = await self.batcher.submit([(w.prompt, w.full) for w in windows])
        cats = self.reader.categories
        return [Detection(unsafe=u, category=cats[c] if cats else None, detector=self.name) for u, c in readings]

    async def aclose(self) -> None:
        self.batcher.close()
