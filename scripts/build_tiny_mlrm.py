"""Build the tiny multimodal reasoning model used by the end-to-end tests (no hub access).

Why: tests need a model served by the REAL vLLM engine (images, reasoning parser, streaming,
aborts) whose output is nevertheless deterministic. This script builds a ~1 MB Qwen2-VL
(hidden 64, 2 layers, head_dim 32, ViT of depth 2) with a byte-level BPE tokenizer trained on
the scripted texts, and trains it with AdamW (fixed seed) to reproduce at temperature 0:

* every conversation of ``scripts/tiny_mlrm_conversations.json``: the chat template's generation
  prompt pre-fills ``<think>\\n`` and the model writes ``{reasoning}</think>{answer}<|im_end|>``, so
  vLLM's ``deepseek_r1`` parser yields ``reasoning`` and ``content`` equal to the JSON strings;
* steer continuations: after an assistant prefix ``<think>\\n`` + any word/sentence-boundary prefix
  of the reasoning + ``reflection`` (``continue_final_message``), it writes
  ``{steer_continuation}</think>{steer_answer}<|im_end|>``;
* guard-model completions for ``llama_guard_3_prompt(u, a)`` / ``qwen3guard_prompt(u, a)`` with any
  u/a (raw ``/v1/completions``).

A stamp (hash of this script, the JSON and guard_prompts.py) makes re-runs free; ``--force``
rebuilds. Usage: ``.venv/bin/python scripts/build_tiny_mlrm.py [--out DIR] [--force]``
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from server.supervisor import CPU_ARGS, CPU_ENV, ModelHints
from types import ModuleType
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

if TYPE_CHECKING:  # transformers is imported lazily: an up-to-date run should take seconds
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )

ROOT = Path(__file__).resolve().parents[1]
CONVERSATIONS = ROOT / "scripts" / "tiny_mlrm_conversations.json"
GUARD_PROMPTS = ROOT / "guard" / "detectors" / "guard_prompts.py"
STAMP = ".build-stamp"
HINTS = ModelHints(
    vllm_args=[*CPU_ARGS, "--reasoning-parser", "deepseek_r1", "--limit-mm-per-prompt", '{"image": 2, "video": 0}'],
    env=CPU_ENV,
)
SEED = 1234
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
THINK_TOKENS = ["<think>", "</think>"]
# an image becomes 4..8 merged tokens (28x28 pixels each)
MIN_PIXELS, MAX_PIXELS = 4 * 28 * 28, 8 * 28 * 28
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n<think>\\n' }}{%- endif -%}"
)
SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a careful assistant. Think step by step.",
    "Answer briefly and truthfully.",
]


def load_guard_prompts() -> ModuleType:
    """guard_prompts.py by path, so the rest of the guard package (under edit) is not imported."""
    spec = importlib.util.spec_from_file_location("tg_guard_prompts", GUARD_PROMPTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in (Path(__file__).resolve(), CONVERSATIONS, GUARD_PROMPTS):
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- text sources


@dataclass(frozen=True)
class Sample:
    """One training example: prompt (text or chat messages) and the exact completion text."""

    prompt: str
    target: str
    image: Image.Image | None = None


def word_boundary_prefixes(text: str) -> list[str]:
    """Every prefix of ``text`` cut at a word or sentence boundary (with/without the space)."""
    cuts = {0, len(text)}
    for i, ch in enumerate(text):
        if ch == " ":
            cuts.update((i, i + 1))
    return [text[:i] for i in sorted(cuts)]


def word_pool(spec: dict) -> list[str]:
    texts = [spec["reflection"]]
    for conv in spec["conversations"]:
        texts += [conv["prompt"], conv["reasoning"], conv["answer"], conv.get("steer_answer", "")]
    extra = (
        "alpha beta gamma delta hello world ok yes no maybe the a an of in on to for with is are was "
        "network server model token stream guard policy safe unsafe 42 7 3.14 café naïve 東京 🙂 "
        "kill help recipe virus hack weapon poem story code python json http"
    ).split()
    return sorted({w for t in texts for w in t.split()} | set(extra))


def random_text(rng: random.Random, spec: dict, words: list[str]) -> str:
    """Arbitrary user/agent text for the guard prompts: scripted sentences, salads, junk."""
    convs = spec["conversations"]
    kind = rng.random()
    if kind < 0.1:
        return ""
    if kind < 0.35:
        conv = rng.choice(convs)
        field = rng.choice(["prompt", "reasoning", "answer", "reasoning"])
        return rng.choice(word_boundary_prefixes(conv[field])[1:])
    if kind < 0.45:
        conv = rng.choice(convs)
        return f"<think>\n{conv['reasoning']}</think>{conv['answer']}"
    if kind < 0.9:
        n = rng.randint(1, 60)
        sep = lambda: rng.choice([" "] * 12 + ["\n", ". ", ", ", "\n\n"])  # noqa: E731
        return "".join(rng.choice(words) + sep() for _ in range(n)).strip()
    return "".join(chr(rng.randint(33, 0x24F)) for _ in range(rng.randint(1, 40)))


def random_image(rng: random.Random) -> Image.Image:
    """Any picture: solid, shapes or noise, random size and aspect ratio."""
    w, h = rng.randint(16, 320), rng.randint(16, 320)
    img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.3:
        img = Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))
    for _ in range(rng.randint(0, 5)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, x0 + rng.randint(1, w), y0 + rng.randint(1, h))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return img


# ----------------------------------------------------------------------------- tokenizer


def build_tokenizer(spec: dict, guard: ModuleType, rng: random.Random) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    words = word_pool(spec)
    corpus = [random_text(rng, spec, words) for _ in range(400)]
    for conv in spec["conversations"]:
        corpus += [conv["prompt"], conv["reasoning"], conv["answer"]] * 20
        corpus += [conv.get("steer_continuation", ""), conv.get("steer_answer", "")] * 20
    corpus += [spec["reflection"]] * 20
    for fmt in ("llama_guard_3", "qwen3guard_gen"):
        build = guard.FORMATS[fmt][0]
        corpus += [build("hello", "world")] * 20
    corpus += [c["completion"] for c in spec["guard_completions"]] * 20

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1536,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


# ----------------------------------------------------------------------------- data


class DataBuilder:
    """Turns samples into (input_ids, labels, pixel_values, grid) tensors."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, image_processor: Qwen2VLImageProcessor) -> None:
        self.tok = tokenizer
        self.improc = image_processor
        self.image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")

    def encode(self, sample: Sample) -> tuple[list[int], list[int], torch.Tensor | None, torch.Tensor | None]:
        prompt_ids = self.tok(sample.prompt, add_special_tokens=False)["input_ids"]
        target_ids = self.tok(sample.target, add_special_tokens=False)["input_ids"]
        pixels = grid = None
        if sample.image is not None:
            out = self.improc(images=[sample.image], return_tensors="pt")
            pixels, grid = out["pixel_values"], out["image_grid_thw"]
            n = int(grid.prod()) // self.improc.merge_size**2
            i = prompt_ids.index(self.image_pad)
            prompt_ids = prompt_ids[:i] + [self.image_pad] * n + prompt_ids[i + 1 :]
        ids = prompt_ids + target_ids
        labels = [-100] * len(prompt_ids) + target_ids
        return ids, labels, pixels, grid

    def batch(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(s) for s in samples]
        width = max(len(e[0]) for e in encoded)
        pad = self.tok.pad_token_id
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (i, lab, _, _) in enumerate(encoded):
            ids[row, : len(i)] = torch.tensor(i)
            labels[row, : len(lab)] = torch.tensor(lab)
            mask[row, : len(i)] = 1
        out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        pix = [e[2] for e in encoded if e[2] is not None]
        if pix:
            out["pixel_values"] = torch.cat(pix)
            out["image_grid_thw"] = torch.cat([e[3] for e in encoded if e[3] is not None])
            out["mm_token_type_ids"] = (ids == self.image_pad).int()  # text 0, image 1
        return out


class SampleGenerator:
    """Random draws of chat, steer and guard samples (all from one seeded RNG)."""

    def __init__(self, spec: dict, guard: ModuleType, tok: PreTrainedTokenizerFast, rng: random.Random) -> None:
        self.spec, self.guard, self.tok, self.rng = spec, guard, tok, rng
        self.words = word_pool(spec)
        self.steerable = [c for c in spec["conversations"] if "steer_continuation" in c]

    def _user_messages(self, conv: dict, with_image: bool) -> list[dict]:
        messages: list[dict] = []
        if self.rng.random() < 0.25:
            system = self.rng.choice(SYSTEM_PROMPTS + [random_text(self.rng, self.spec, self.words)])
            messages.append({"role": "system", "content": system})
        if with_image:
            parts = [{"type": "image"}, {"type": "text", "text": conv["prompt"]}]
            messages.append({"role": "user", "content": parts if self.rng.random() < 0.5 else parts[::-1]})
        else:
            messages.append({"role": "user", "content": conv["prompt"]})
        return messages

    def chat(self, conv: dict) -> Sample:
        with_image = conv["image"] or self.rng.random() < 0.1
        messages = self._user_messages(conv, with_image)
        prompt = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        target = f"{conv['reasoning']}</think>{conv['answer']}<|im_end|>"
        return Sample(prompt, target, random_image(self.rng) if with_image else None)

    def steer(self, conv: dict, prefix: str | None = None) -> Sample:
        messages = self._user_messages(conv, conv["image"])
        if prefix is None:
            prefix = self.rng.choice(word_boundary_prefixes(conv["reasoning"]))
        messages.append({"role": "assistant", "content": "<think>\n" + prefix + self.spec["reflection"]})
        prompt = self.tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False, continue_final_message=True
        )
        target = f"{conv['steer_continuation']}</think>{conv['steer_answer']}<|im_end|>"
        return Sample(prompt, target, random_image(self.rng) if conv["image"] else None)

    def guard_sample(self, fmt: str) -> Sample:
        build = self.guard.FORMATS[fmt][0]
        user = random_text(self.rng, self.spec, self.words)
        agent = random_text(self.rng, self.spec, self.words)
        completion = next(c["completion"] for c in self.spec["guard_completions"] if c["format"] == fmt)
        return Sample(build(user, agent), completion + "<|im_end|>")

    def batch(self) -> list[list[Sample]]:
        """One training step: [chats + steers, guard prompts]."""
        convs = self.spec["conversations"]
        chats = [self.chat(c) for c in convs] + [self.chat(self.rng.choice(convs)) for _ in range(3)]
        chats += [self.steer(c) for c in self.steerable for _ in range(6)]
        guards = [self.guard_sample(f) for f in ("llama_guard_3", "qwen3guard_gen") for _ in range(3)]
        return [chats, guards]


# ----------------------------------------------------------------------------- model


def build_model(tok: PreTrainedTokenizerFast) -> Qwen2VLForConditionalGeneration:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = (len(tok) + 63) // 64 * 64
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 64,
            "hidden_size": 64,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    return Qwen2VLForConditionalGeneration(config)


def target_loss(model: Qwen2VLForConditionalGeneration, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the completion tokens only (the LM head never sees prompt positions)."""
    labels = batch.pop("labels")[:, 1:]
    hidden = model.model(**batch).last_hidden_state[:, :-1]
    keep = labels != -100
    return torch.nn.functional.cross_entropy(model.lm_head(hidden[keep]), labels[keep])


def train(
    model: Qwen2VLForConditionalGeneration, gen: SampleGenerator, data: DataBuilder, steps: int, lr: float
) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        opt.zero_grad()
        groups = gen.batch()  # short chats and long guard prompts apart: less padding
        loss_value = 0.0
        for group in groups:
            loss = target_loss(model, data.batch(group)) / len(groups)
            loss.backward()
            loss_value += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {loss_value:.4f}", flush=True)
    model.eval()
    return loss_value


@torch.no_grad()
def greedy(model: Qwen2VLForConditionalGeneration, data: DataBuilder, sample: Sample) -> str:
    batch = data.batch([Sample(sample.prompt, "", sample.image)])
    batch.pop("labels")
    out = model.generate(**batch, max_new_tokens=120, do_sample=False)
    return data.tok.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=False)


def self_check(model: Qwen2VLForConditionalGeneration, gen: SampleGenerator, data: DataBuilder) -> list[str]:
    """Greedy-decode a spread of fresh samples in transformers; return the mismatches."""
    samples = [gen.chat(c) for c in gen.spec["conversations"]]
    for conv in gen.steerable:
        prefixes = word_boundary_prefixes(conv["reasoning"])
        samples += [gen.steer(conv, p) for p in gen.rng.sample(prefixes, 6)]
    samples += [gen.guard_sample(f) for f in ("llama_guard_3", "qwen3guard_gen") for _ in range(4)]
    failures = []
    for s in samples:
        got = greedy(model, data, s)
        if not got.startswith(s.target):
            failures.append(f"prompt ...{s.prompt[-60:]!r}\n    want {s.target!r}\n    got  {got!r}")
    return failures


def save(model: Qwen2VLForConditionalGeneration, processor: Qwen2VLProcessor, out: Path, stamp: str) -> None:
    """Write the model folder atomically; an empty ``stamp`` leaves it marked as not built."""
    from transformers import GenerationConfig

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tok = processor.tokenizer
    GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.pad_token_id,
    ).save_pretrained(tmp)
    HINTS.write(tmp)
    if stamp:
        (tmp / STAMP).write_text(stamp + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "tiny-mlrm-vl")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--force", action="store_true", help="rebuild even if the stamp matches")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    stamp = f"{source_hash()} steps={args.steps} lr={args.lr}"
    if not args.force and (out / STAMP).is_file() and (out / STAMP).read_text().strip() == stamp:
        HINTS.write(out)  # serving flags change without the weights (server/supervisor.py CPU_ARGS)
        print(f"{out} is up to date (stamp {stamp[:12]}); --force to rebuild")
        return

    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    t0 = time.time()
    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and reproducible
    rng = random.Random(SEED)
    spec = json.loads(CONVERSATIONS.read_text())
    guard = load_guard_prompts()

    tok = build_tokenizer(spec, guard, rng)
    improc = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    videoproc = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, max_frames=4)
    processor = Qwen2VLProcessor(improc, tok, videoproc, chat_template=CHAT_TEMPLATE)
    model = build_model(tok)
    gen = SampleGenerator(spec, guard, tok, rng)
    data = DataBuilder(tok, improc)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {len(tok)} tokens; model: {n_params / 1e6:.2f} M parameters; training {args.steps} steps")

    loss = train(model, gen, data, args.steps, args.lr)
    model = model.to(torch.bfloat16)  # what vLLM runs anyway; self-check the saved weights
    failures = self_check(model, gen, data)
    for failure in failures:
        print("MISMATCH", failure)
    save(model, processor, out, "" if failures else stamp)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(
        f"built {out} ({size:.1f} MB): {args.steps} steps, final loss {loss:.4f}, "
        f"{len(failures)} self-check mismatches, {time.time() - t0:.0f} s"
    )
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
