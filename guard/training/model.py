"""The classifier network, trained in torch; serving runs the same maths in numpy.

Input: the mean of the window's distilled MiniLM token vectors (frozen: with a few hundred
harmful behaviours to learn from, tuned token vectors memorise topics and generalise worse),
and the same for the request that started the stream. The request goes through its own small
layer (``prompt_hidden`` wide), which an auxiliary head also trains on thousands of labelled
requests, and is mixed into the window's hidden layer: harm is compliance *with a harmful
request*, which the window alone often cannot tell (a recipe, a persuasive essay).
A third, max-pooled pathway projects each token on its own (``peak_width`` columns) and keeps
each column's maximum over the window: a mean dilutes one telling word in 120 tokens of
filler, a maximum does not. Heads: unsafe, refusal, hazard category. Because every mean is
taken before a linear layer, and the maximum after one, :func:`fold` moves all three first
layers into token tables.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from guard.datasets.categories import S_CODES


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 128
    epochs: int = 15
    batch: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    category_weight: float = 0.5
    prompt_hidden: int = 64
    prompt_weight: float = 0.5  # the auxiliary request-harm loss
    # the max-pooled pathway: each token through its own learned projection, the window's
    # feature is the maximum over its tokens. Off (0) by default: not yet cross-validated;
    # validation figures in docs/experiments.md ("A max-pooled pathway")
    peak_width: int = 0
    # the hashed n-gram reading (guard.training.ngrams): its share of the unsafe logit. Off (0,
    # fits none) by default: it lowered cross-validated recall (docs/experiments.md,
    # "A hashed n-gram reading")
    ngram_blend: float = 0.0
    ngram_epochs: int = 4
    ngram_lr: float = 0.05
    ngram_l2: float = 1e-6
    threads: int = 2
    # networks fitted alike from seeds seed, seed + 1, ..., served as one by averaging their
    # logits (StaticClassifier); each member costs one more fit and one more table gather per check.
    # Two ship since session 11 (docs/experiments.md, "Two fits averaged")
    members: int = 2
    # the frozen token vectors (guard.training.distil.token_table): MiniLM's reading of each token
    # alone, its average reading in a corpus, or both side by side
    embeddings: str = "isolated"
    sif: float = 0.0  # smooth inverse frequency weighting of the token vectors (distil.token_table); 0: off


def add_config_arguments(parser) -> None:
    """The variant switches ``thoughtguard train`` and ``python -m guard.training.crossval`` share."""
    from guard.training.distil import EMBEDDINGS

    base = TrainConfig()
    parser.add_argument("--peak-width", type=int, default=base.peak_width,
                        help="columns of the max-pooled pathway (0: off, the shipped recipe; training takes ~8x longer)")
    parser.add_argument("--ngram-blend", type=float, default=base.ngram_blend,
                        help="the hashed n-gram reading's share of the unsafe logit (0: none, the shipped recipe)")
    parser.add_argument("--members", type=int, default=base.members,
                        help="networks fitted from consecutive seeds and served as their logit mean (default "
                             f"{base.members}, the shipped recipe; training time and artifact size grow with it)")
    parser.add_argument("--sif", type=float, default=base.sif,
                        help="scale token vectors by a / (a + p(token)), p the corpus frequency (0: off, the shipped recipe)")
    parser.add_argument("--embeddings", choices=EMBEDDINGS, default=base.embeddings,
                        help="frozen token vectors: each token read alone (the shipped recipe), averaged over its "
                             "uses in a corpus, or both side by side (guard.training.distil.token_table)")


def config_from(args) -> TrainConfig:
    if args.members < 1:
        raise SystemExit("--members must be at least 1")
    if args.sif < 0:
        raise SystemExit("--sif must be 0 (off) or positive")
    return TrainConfig(peak_width=args.peak_width, ngram_blend=args.ngram_blend, members=args.members,
                       embeddings=args.embeddings, sif=args.sif)


def normalise(table: np.ndarray) -> np.ndarray:
    """Centre the distilled vectors (their shared direction carries no meaning) and scale to unit mean norm."""
    centred = table - table.mean(axis=0, keepdims=True)
    return (centred / np.linalg.norm(centred, axis=1).mean()).astype(np.float32)


def pooled(table: np.ndarray, token_ids: list[np.ndarray], chunk: int = 4096) -> np.ndarray:
    """Mean token vector of every window (the frozen input), computed once."""
    import torch
    from torch import nn

    bag = nn.EmbeddingBag.from_pretrained(torch.from_numpy(table), mode="mean")
    out = []
    with torch.no_grad():
        for i in range(0, len(token_ids), chunk):
            part = token_ids[i : i + chunk]
            flat = torch.from_numpy(np.concatenate(part).astype(np.int64))
            lengths = torch.tensor([len(p) for p in part])
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
            out.append(bag(flat, offsets).numpy())
    return np.concatenate(out)


def padded(token_ids: list[np.ndarray], length: int) -> np.ndarray:
    """(windows, length) int32 token ids, -1 after each window's end."""
    out = np.full((len(token_ids), length), -1, dtype=np.int32)
    for i, ids in enumerate(token_ids):
        out[i, : len(ids)] = ids[:length]
    return out


def fit(
    x: np.ndarray,
    xp: np.ndarray,  # pooled request of each window; zeros where the window has none
    unsafe: np.ndarray,
    refusal: np.ndarray,
    category: np.ndarray,  # index into S_CODES, -1 where none
    weight: np.ndarray,
    requests: tuple[np.ndarray, np.ndarray],  # pooled labelled requests and their harm labels
    cfg: TrainConfig,
    *,
    seed: int = 0,
    tokens: np.ndarray | None = None,  # (windows, max_tokens) from :func:`padded`, for the peak pathway
    table: np.ndarray | None = None,  # the frozen token vectors the peak pathway projects
) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads)
    d = x.shape[1]
    text_in, prompt_in = nn.Linear(d, cfg.hidden), nn.Linear(d, cfg.prompt_hidden)
    mix = nn.Linear(cfg.prompt_hidden, cfg.hidden, bias=False)
    out, prompt_head = nn.Linear(cfg.hidden, 2 + len(S_CODES)), nn.Linear(cfg.prompt_hidden, 1)
    drop = nn.Dropout(cfg.dropout)
    modules = nn.ModuleList([text_in, prompt_in, mix, out, prompt_head])
    peak = cfg.peak_width > 0 and tokens is not None and table is not None
    if peak:
        peak_in, peak_mix = nn.Linear(d, cfg.peak_width), nn.Linear(cfg.peak_width, cfg.hidden, bias=False)
        modules.extend([peak_in, peak_mix])
        TOK, TABLE = torch.from_numpy(tokens), torch.from_numpy(table)

    def peak_feature(idx: torch.Tensor) -> torch.Tensor:
        # project only the distinct tokens of the batch, then take each window's maximum
        tok = TOK[idx].long()
        distinct, where = torch.unique(tok, return_inverse=True)
        z = peak_in(TABLE[distinct.clamp(min=0)])[where]
        return z.masked_fill((tok < 0).unsqueeze(-1), float("-inf")).amax(dim=1)
    opt = torch.optim.AdamW(modules.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def prompt_hidden(p: torch.Tensor) -> torch.Tensor:
        # an absent request (all zeros) must add nothing, as at serving time
        present = (p.abs().sum(dim=1, keepdim=True) > 0).float()
        return torch.relu(prompt_in(drop(p))) * present

    X, XP = torch.from_numpy(x), torch.from_numpy(xp)
    y_u = torch.from_numpy(unsafe.astype(np.float32))
    y_r = torch.from_numpy(refusal.astype(np.float32))
    y_c = torch.from_numpy(category.astype(np.int64))
    w = torch.from_numpy((weight / weight.mean()).astype(np.float32))
    RQ, y_q = torch.from_numpy(requests[0]), torch.from_numpy(requests[1].astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    for epoch in range(cfg.epochs):
        modules.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch):
            pre = text_in(drop(X[idx])) + mix(prompt_hidden(XP[idx]))
            if peak:
                pre = pre + peak_mix(drop(peak_feature(idx)))
            hidden = torch.relu(pre)
            logits, wi = out(drop(hidden)), w[idx]
            loss = (F.binary_cross_entropy_with_logits(logits[:, 0], y_u[idx], reduction="none") * wi).mean()
            loss = loss + (F.binary_cross_entropy_with_logits(logits[:, 1], y_r[idx], reduction="none") * wi).mean()
            has_cat = y_c[idx] >= 0
            if has_cat.any():
                ce = F.cross_entropy(logits[has_cat, 2:], y_c[idx][has_cat], reduction="none")
                loss = loss + cfg.category_weight * (ce * wi[has_cat]).mean()
            # the request pathway also learns to tell harmful requests on its own, from many more
            # requests than the stream data holds
            k = torch.randint(len(RQ), (min(len(idx), len(RQ)),), generator=gen)
            q_logit = prompt_head(prompt_hidden(RQ[k]))[:, 0]
            loss = loss + cfg.prompt_weight * F.binary_cross_entropy_with_logits(q_logit, y_q[k])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / n:.4f}", file=sys.stderr, flush=True)

    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy().copy()

    params = {
        "w1": numpy(text_in.weight).T, "b1": numpy(text_in.bias),
        "wp": numpy(prompt_in.weight).T, "bp": numpy(prompt_in.bias),
        "mix": numpy(mix.weight).T,
        "w2": numpy(out.weight).T, "b2": numpy(out.bias),
        "wq": numpy(prompt_head.weight).T, "bq": numpy(prompt_head.bias),
    }
    if peak:
        params |= {"wk": numpy(peak_in.weight).T, "bk": numpy(peak_in.bias), "kmix": numpy(peak_mix.weight).T}
    return params


def fold(table: np.ndarray, params: dict[str, np.ndarray], key: str = "w1") -> np.ndarray:
    """(vocab, width): each token's vector already through a first layer's weights."""
    return (table @ params[key]).astype(np.float32)
