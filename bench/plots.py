"""Matplotlib figures for docs/benchmarks.md (PNG, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"direct": ("k", "o"), "guard-off": ("tab:gray", "s"), "buffered": ("tab:blue", "^"),
         "hidden": ("tab:purple", "v"), "live": ("tab:green", "D")}


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overhead(data: dict[str, Any], path: Path) -> None:
    table = data["table"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    panels = [("ttft_p50", "TTFT p50 (ms)"), ("ttft_p99", "TTFT p99 (ms)"), ("tpot_p50", "TPOT p50 (ms per token)"),
              ("tokens_per_s", "output tokens/s")]
    for ax, (key, title) in zip(axes, panels):
        for name, rows in table.items():
            cs = sorted(int(c) for c in rows)
            ys = [rows[str(c)][key] for c in cs]
            ys = [None if y is None else (y if key == "tokens_per_s" else y * 1000) for y in ys]
            color, marker = STYLE.get(name, (None, "x"))
            ax.plot(cs, ys, marker=marker, color=color, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(int(c) for c in next(iter(table.values()))))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    where = "vLLM on core 0, gateway + client on core 1" if data["args"].get("isolate") else "all processes share both cores"
    fig.suptitle(f"Gateway overhead vs vLLM ({data['model']}, detector {data['detector']}; {where})")
    _save(fig, path)


def capacity(data: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, steps in data["series"].items():
        xs = [s["offered_chunks_per_s"] for s in steps]
        axes[0].plot(xs, [s["delivered_chunks_per_s"] for s in steps], marker="o", label=name)
        axes[1].plot(xs, [s["lag_p99_s"] * 1000 if s["lag_p99_s"] is not None else None for s in steps],
                     marker="o", label=name)
        axes[2].plot(xs, [s["chunks_per_cpu_s"] for s in steps], marker="o", label=name)
    lim = max(s["offered_chunks_per_s"] for st in data["series"].values() for s in st)
    axes[0].plot([0, lim], [0, lim], "k:", lw=0.8, label="offered")
    axes[0].set_title("upstream chunks/s through the gateway")
    axes[1].set_title("p99 release lag behind the upstream (ms)")
    axes[1].set_yscale("log")
    axes[2].set_title("chunks per gateway CPU-second (per core)")
    for ax in axes:
        ax.set_xlabel("offered upstream chunks/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Gateway capacity on the replay upstream ({data['fixture']}, {data['tok_rate']} tok/s per stream)")
    _save(fig, path)


def soak(data: dict[str, Any], path: Path) -> None:
    samples = data["samples"]
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(t, [s["rss_mib"] for s in samples])
    axes[0].set_title("gateway RSS (MiB)")
    axes[1].plot(t, [s["sockets"] for s in samples], label="open sockets")
    axes[1].plot(t, [s["in_flight"] for s in samples], label="in-flight gauge")
    axes[1].legend(fontsize=8)
    axes[1].set_title("gateway sockets / in-flight")
    axes[2].plot(t, [s["fds"] for s in samples])
    axes[2].set_title("gateway open file descriptors")
    for ax in axes:
        ax.set_xlabel("seconds")
        ax.grid(alpha=0.3)
        for ev in data.get("events", []):
            ax.axvline(ev["t"], color="r", lw=0.7, alpha=0.6)
    fig.suptitle("Soak and faults (red lines: injected faults)")
    _save(fig, path)
