"""Write benign answers for Alpaca instructions with a local model (training negatives).

Why: the real benign answers in ../shared/data cover about 100 instructions, so the classifier
sees few helpful answers about unusual topics. This asks the embedded SmolLM2-135M-Instruct
(served by vLLM on CPU, no model hub) to answer random instructions of
``refusal_direction/harmless_train.json`` and writes one ``{"index", "response"}`` line per
answer: the index into that file, never its text. ``guard/datasets/generated.py`` reads it back;
``thoughtguard train --generated FILE`` trains with it and
``python -m guard.training.crossval --generated FILE`` measures what it changes.

Deterministic for a seed (instruction choice and per-request sampling seeds), up to vLLM's CPU
kernels. About 4 minutes for 1,200 answers on 2 cores.

Usage: ``.venv/bin/python scripts/generate_benign.py [--n 1200] [--out FILE] [--url URL]``
(without ``--url`` it starts vLLM on ``models/smollm2-135m`` and stops it afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import start_vllm  # noqa: E402
from guard.datasets.generated import instructions  # noqa: E402
from guard.datasets.paths import data_dir  # noqa: E402
from guard.datasets.progress import progress  # noqa: E402

MODEL = ROOT / "models" / "smollm2-135m"
# plain ChatML without the embedded template's "think first" system prompt: a direct answer
PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


async def generate(url: str, texts: list[str], chosen: list[int], out: Path, *, max_tokens: int, concurrency: int) -> None:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url.rstrip("/") + "/v1", timeout=600) as client:
        model = (await client.get("/models")).json()["data"][0]["id"]

        async def one(i: int) -> dict[str, object]:
            async with limit:
                body = {"model": model, "prompt": PROMPT.format(texts[i]), "max_tokens": max_tokens,
                        "temperature": 0.7, "seed": i, "stop": ["<|im_end|>"]}
                r = await client.post("/completions", json=body)
                r.raise_for_status()
                return {"index": i, "response": r.json()["choices"][0]["text"].strip()}

        tasks = [asyncio.ensure_future(one(i)) for i in chosen]
        rows = [await t for t in progress(tasks, f"answering {len(chosen)} instructions")]
    out.write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["index"])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "guard" / "artifacts" / "benign_generated.jsonl")
    p.add_argument("--url", help="a running OpenAI-compatible server (default: start vLLM on the embedded model)")
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--concurrency", type=int, default=48)
    p.add_argument("--data-dir")
    args = p.parse_args()
    texts = instructions(data_dir(args.data_dir))
    chosen = [int(i) for i in np.random.default_rng(args.seed).choice(len(texts), size=args.n, replace=False)]
    server = None if args.url else start_vllm(MODEL)
    try:
        asyncio.run(generate(args.url or server.url, texts, chosen, args.out,
                             max_tokens=args.max_tokens, concurrency=args.concurrency))
    finally:
        if server is not None:
            server.stop()
    print(f"wrote {args.n} answers to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
