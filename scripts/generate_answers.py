"""Write training answers with a local model: benign ones, or compliant answers to harmful requests.

Why: the real answers in ../shared/data cover about 100 benign instructions and JailbreakBench's
100 harmful behaviours, so the classifier sees few topics on either side. This asks the embedded
SmolLM2-135M-Instruct (served by vLLM on CPU, no model hub) to answer

- ``--kind benign``: random Alpaca instructions (``refusal_direction/harmless_train.json``);
- ``--kind harmful``: every distinct harmful request of the request-only sets (AdvBench,
  HarmBench, StrongREJECT, ...; ``guard.datasets.prompts.harmful_texts``), with the answer opened
  for it ("Sure, here is", "Step 1:", ...), the way jailbreaks and refusal ablation make a model
  comply. Answers that still decline, or are under 20 words, are dropped;
- ``--kind topical``: benign requests on the harmful sets' topics (XSTest's safe prompts,
  JailbreakBench's benign goals; ``guard.datasets.prompts.topical_texts``), answered plainly;
- ``--kind neighbours``: the Alpaca instructions nearest the harmful requests in MiniLM's
  sentence space (``guard.training.neighbours``; encryption, news, weapons in games), answered
  plainly: benign answers on harm's topics, so the classifier stops reading topic as harm.

It writes one ``{"kind", "index", "response"}`` line per answer: the index into that list, never
the request's text. ``guard/datasets/generated.py`` reads it back; ``thoughtguard train
--generated FILE,FILE`` trains with it and ``python -m guard.training.crossval --generated ...``
measures what it changes.

Deterministic for a seed (request choice, openers and per-request sampling seeds), up to vLLM's
CPU kernels. About 4 minutes for 1,200 benign answers and 8 for the 1,944 harmful requests (4 for the 779 that session 16 appended) on
2 cores; 6 for the 1,200 neighbours that session 17 appended (``--n 2400 --append``).

Usage: ``.venv/bin/python scripts/generate_answers.py --kind benign|harmful|topical|neighbours [--n N] [--out FILE] [--url URL] [--append]``
(without ``--url`` it starts vLLM on ``models/smollm2-135m`` and stops it afterwards). ``--append``
answers only the chosen requests that the file has no line for and keeps the lines it has: a
request list that grew at its end (``harmful_texts`` gained MM-SafetyBench in session 16) gets
answers for the new requests without rewriting the old ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Sequence

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import start_vllm  # noqa: E402
from guard.datasets.generated import KINDS, SHIPPED, SHIPPED_HARMFUL, SHIPPED_NEIGHBOURS, TOPICAL, requests_of  # noqa: E402
from guard.datasets.refusal import looks_like_refusal  # noqa: E402
from guard.datasets.paths import data_dir  # noqa: E402
from guard.datasets.progress import progress  # noqa: E402

MODEL = ROOT / "models" / "smollm2-135m"
# plain ChatML without the embedded template's "think first" system prompt: a direct answer
PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
# how a harmful answer is opened for the model; kept in the answer, and varied, so that no one
# opener becomes the sign of harm (benign answers open with "Sure" and "Here's" too)
OPENERS = ("Sure, here is", "Here's how", "Step 1:", "1.", "Certainly! ", "To do this,", "Title:")


async def generate(url: str, kind: str, texts: list[str], chosen: list[int], out: Path, *, max_tokens: int,
                   concurrency: int, seed: int, kept: Sequence[dict[str, object]] = ()) -> None:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url.rstrip("/") + "/v1", timeout=600) as client:
        model = (await client.get("/models")).json()["data"][0]["id"]

        async def one(i: int) -> dict[str, object]:
            opener = OPENERS[(i + seed) % len(OPENERS)] if kind == "harmful" else ""
            async with limit:
                body = {"model": model, "prompt": PROMPT.format(texts[i]) + opener, "max_tokens": max_tokens,
                        "temperature": 0.7, "seed": i, "stop": ["<|im_end|>"]}
                r = await client.post("/completions", json=body)
                r.raise_for_status()
                return {"kind": kind, "index": i, "response": (opener + r.json()["choices"][0]["text"]).strip()}

        tasks = [asyncio.ensure_future(one(i)) for i in chosen]
        rows = [await t for t in progress(tasks, f"answering {len(chosen)} {kind} requests")]
    if kind == "harmful":  # the model declined despite the opener: not a harmful answer
        rows = [r for r in rows if not looks_like_refusal(str(r["response"])) and len(str(r["response"]).split()) >= 20]
    print(f"{len(rows)} new {kind} answers, {len(kept)} kept", file=sys.stderr)
    rows = [*kept, *rows]
    out.write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["index"])))
    print(f"wrote {len(rows)} {kind} answers to {out}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--n", type=int, help="how many requests (default: 1,200 benign, the 2,400 nearest for neighbours "
                                         "(1,200 until session 17); every harmful or topical one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="default: the shipped file of that kind in guard/artifacts/")
    p.add_argument("--url", help="a running OpenAI-compatible server (default: start vLLM on the embedded model)")
    p.add_argument("--max-tokens", type=int, help="default: 160 benign, 120 harmful (only the first windows of a harmful answer are labelled unsafe)")
    p.add_argument("--concurrency", type=int, default=48)
    p.add_argument("--append", action="store_true", help="keep the file's lines; answer only chosen requests it has none for")
    p.add_argument("--data-dir")
    args = p.parse_args()
    root = data_dir(args.data_dir)
    texts = requests_of(args.kind, root)
    n = min(args.n or {"benign": 1200, "neighbours": 2400}.get(args.kind, len(texts)), len(texts))
    if args.kind == "neighbours":
        from guard.training.neighbours import nearest_instructions

        chosen = nearest_instructions(root, n)
    else:
        chosen = sorted(int(i) for i in np.random.default_rng(args.seed).choice(len(texts), size=n, replace=False))
    out = args.out or {"benign": SHIPPED, "harmful": SHIPPED_HARMFUL, "topical": TOPICAL,
                       "neighbours": SHIPPED_NEIGHBOURS}[args.kind]
    kept = []
    if args.append and out.exists():
        kept = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        # requests asked before whose answer was dropped (it declined) are asked again; with the
        # same per-request seed they mostly decline again
        answered = {int(r["index"]) for r in kept}
        chosen = [i for i in chosen if i not in answered]
    max_tokens = args.max_tokens or (120 if args.kind == "harmful" else 160)
    server = None if args.url else start_vllm(MODEL)
    try:
        asyncio.run(generate(args.url or server.url, args.kind, texts, chosen, out, max_tokens=max_tokens,
                             concurrency=args.concurrency, seed=args.seed, kept=kept))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
