"""Fine-tune all-MiniLM-L6-v2 as a cross-encoder, and export it for serving without torch.

The embeddings and the lowest ``frozen_layers`` are kept as they are and run once per window
(their outputs are cached, in memory and on disk under ``.cache/``: every epoch reads the same
windows); the layers above and a linear head over ``[CLS]`` are trained in bf16 autocast (AMX on
these CPUs) with AdamW. Outputs: one unsafe logit and one logit per MLCommons category (trained
on the unsafe windows whose category is known). The whole network is then exported to ONNX and
quantised to int8 weights (ONNX Runtime's dynamic quantisation): about 23 MB, 7-10 ms a check on
one core. torch and transformers are imported here only.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guard.datasets.categories import S_CODES
from guard.detectors.pairs import PairEncoder
from guard.training.intent_data import TrainWindow


@dataclass(frozen=True)
class IntentConfig:
    frozen_layers: int = 2
    epochs: int = 3
    batch: int = 16
    lr: float = 5e-5
    head_lr: float = 1e-3
    warmup: float = 0.06
    weight_decay: float = 0.01
    dropout: float = 0.1
    category_weight: float = 0.3
    threads: int = 2


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    from guard.training.distil import model_dir

    return AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()


def _extended(mask):
    import torch

    return (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min


def _lower(model, ids, types, mask, frozen: int):
    h = model.embeddings(input_ids=ids, token_type_ids=types)
    ext = _extended(mask)
    for layer in model.encoder.layer[:frozen]:
        h = layer(h, attention_mask=ext)
    return h


def lower_states(windows: list[TrainWindow], pairs: PairEncoder, frozen: int, cache_dir: Path | None,
                 *, batch: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per window: the frozen layers' output (tokens x 384, float16) and its token types."""
    import torch

    encoded = [pairs.ids(w.request, w.text) for w in windows]
    key = hashlib.sha256(repr((frozen, [e for e in encoded])).encode()).hexdigest()[:16]
    path = cache_dir / f"intent-lower-{key}.npz" if cache_dir else None
    types = []
    for ids, second in encoded:
        t = np.zeros(len(ids), np.int64)
        t[second:] = 1
        types.append(t)
    if path is not None and path.exists():
        with np.load(path) as z:
            flat, ends = z["flat"], z["ends"]
        starts = np.concatenate([[0], ends[:-1]])
        _log(f"frozen-layer states from {path}")
        return [flat[s:e] for s, e in zip(starts, ends)], types
    from guard.datasets.progress import progress

    model = _encoder()
    states: list[np.ndarray] = [None] * len(windows)  # type: ignore[list-item]
    order = np.argsort([len(ids) for ids, _ in encoded])  # similar lengths together: less padding
    chunks = [order[i:i + batch] for i in range(0, len(order), batch)]
    with torch.inference_mode():
        for chunk in progress(chunks, "frozen layers", total=len(chunks)):
            width = max(len(encoded[i][0]) for i in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            tt, mask = torch.zeros_like(ids), torch.zeros_like(ids)
            for row, i in enumerate(chunk):
                n = len(encoded[i][0])
                ids[row, :n] = torch.tensor(encoded[i][0])
                tt[row, :n] = torch.from_numpy(types[i])
                mask[row, :n] = 1
            h = _lower(model, ids, tt, mask, frozen).numpy().astype(np.float16)
            for row, i in enumerate(chunk):
                states[i] = h[row, : len(encoded[i][0])]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ends = np.cumsum([len(s) for s in states])
        np.savez(path, flat=np.concatenate(states), ends=ends)
    return states, types


def _head_module(hidden: int, dropout: float):
    import torch

    return torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(hidden, 1 + len(S_CODES)))


def fit(windows: list[TrainWindow], sample_weights: np.ndarray, pairs: PairEncoder, cfg: IntentConfig,
        *, seed: int = 0, cache_dir: Path | None = None) -> dict[str, object]:
    """Fine-tune; returns the trained state (top layers and head) to :func:`export`."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(seed)
    states, _ = lower_states(windows, pairs, cfg.frozen_layers, cache_dir)
    model = _encoder()
    top = torch.nn.ModuleList(model.encoder.layer[cfg.frozen_layers:]).train()
    for module in top.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = cfg.dropout
    head = _head_module(model.config.hidden_size, cfg.dropout).train()
    unsafe = torch.tensor([w.unsafe for w in windows], dtype=torch.float32)
    category = torch.tensor([w.category for w in windows], dtype=torch.long)
    weight = torch.from_numpy(sample_weights)
    opt = torch.optim.AdamW([
        {"params": top.parameters(), "lr": cfg.lr},
        {"params": head.parameters(), "lr": cfg.head_lr},
    ], weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(windows) + cfg.batch - 1) // cfg.batch)
    warm = max(1, int(cfg.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / max(1, steps - warm)))
    lengths = np.array([len(s) for s in states])
    step, start = 0, time.time()
    for epoch in range(cfg.epochs):
        # shuffled, then sorted by length within runs of 50 batches: little padding, still mixed
        perm = rng.permutation(len(windows))
        run = cfg.batch * 50
        perm = np.concatenate([p[np.argsort(lengths[p])] for p in np.split(perm, range(run, len(perm), run))])
        batches = [perm[i:i + cfg.batch] for i in range(0, len(perm), cfg.batch)]
        rng.shuffle(batches)
        total = 0.0
        for b in batches:
            width = int(lengths[b].max())
            h = torch.zeros((len(b), width, states[0].shape[1]), dtype=torch.float32)
            mask = torch.zeros((len(b), width), dtype=torch.long)
            for row, i in enumerate(b):
                h[row, : lengths[i]] = torch.from_numpy(states[i].astype(np.float32))
                mask[row, : lengths[i]] = 1
            ext = _extended(mask)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                for layer in top:
                    h = layer(h, attention_mask=ext)
                logits = head(h[:, 0]).float()
            idx = torch.from_numpy(b)
            loss_u = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], unsafe[idx], reduction="none")
            loss = (loss_u * weight[idx]).mean()
            cats = category[idx]
            known = cats >= 0
            if known.any():
                loss = loss + cfg.category_weight * torch.nn.functional.cross_entropy(logits[known, 1:], cats[known])
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*top.parameters(), *head.parameters()], 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            total += float(loss)
            step += 1
            if step % 100 == 0:
                _log(f"  step {step}/{steps}  loss {total / (step - epoch * len(batches)):.4f}  "
                     f"{time.time() - start:.0f} s")
        _log(f"epoch {epoch + 1}: mean loss {total / len(batches):.4f}")
    return {"top": top.eval().state_dict(), "head": head.eval().state_dict(), "frozen": cfg.frozen_layers}


def export(trained: dict[str, object], directory: Path, work_dir: Path) -> Path:
    """The whole network as ONNX (int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` in,
    ``logits`` out), quantised to int8 weights: ``directory/reader.int8.onnx``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from guard.detectors.intent import MODEL_FILE

    model = _encoder()
    frozen = int(trained["frozen"])  # type: ignore[arg-type]
    top = torch.nn.ModuleList(model.encoder.layer[frozen:])
    top.load_state_dict(trained["top"])  # type: ignore[arg-type]
    head = _head_module(model.config.hidden_size, 0.0)
    head.load_state_dict(trained["head"])  # type: ignore[arg-type]

    class Reader(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.head = model, head

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = _lower(self.model, input_ids, token_type_ids, attention_mask, len(self.model.encoder.layer))
            return self.head(h[:, 0])

    reader = Reader().eval()
    ids = torch.tensor([[101, 2000, 2001, 102, 2002, 2003, 2004, 102]] * 2)
    dyn = {0: "batch", 1: "tokens"}
    work_dir.mkdir(parents=True, exist_ok=True)
    fp32 = work_dir / "reader.fp32.onnx"
    with torch.no_grad():
        torch.onnx.export(reader, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(fp32),
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
                          dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn,
                                        "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / MODEL_FILE
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    return out
