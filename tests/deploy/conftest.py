"""Fixtures for the deployment checks: Helm rendering through Helm's own Go SDK (helm-python-sdk,
no helm binary), kustomize builds through `kubectl kustomize` (or a kustomize binary)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from tests.deploy.k8s import ROOT, load_docs

CHART = ROOT / "helm" / "thoughtguard"
KUSTOMIZE = ROOT / "deploy" / "kustomize"
RELEASE, NAMESPACE = "tg", "ai"

# The documented variants: helm/thoughtguard/ci/<name>-values.yaml (docs/deployment.md shows
# each); "default" is the chart's own values.
VARIANTS = ["default"] + sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))


def variant_values(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text()) or {}


@pytest.fixture(scope="session")
def helm() -> Any:
    import helm_python  # helm-python-sdk: Helm's Go SDK behind a C ABI, no helm binary

    return helm_python


@pytest.fixture(scope="session")
def render(helm: Any) -> Iterator[Callable[..., dict[str, Any]]]:
    """render(values) -> {"objects": [...], "notes": str}, cached per values."""
    chart = helm.Chart.load(CHART)
    cache: dict[str, dict[str, Any]] = {}

    def _render(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, Any]:
        key = json.dumps([values or {}, name, namespace], sort_keys=True)
        if key not in cache:
            manifests = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
            objects: list[dict[str, Any]] = []
            notes = ""
            for path, text in sorted(manifests.items()):
                if path.endswith("NOTES.txt"):
                    notes = text
                elif path.endswith((".yaml", ".yml")):
                    objects.extend(load_docs(text))
            cache[key] = {"objects": objects, "notes": notes}
        return cache[key]

    yield _render
    chart.close()


def _kustomize_cmd() -> list[str] | None:
    if os.environ.get("KUSTOMIZE"):
        return [os.environ["KUSTOMIZE"], "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@pytest.fixture(scope="session")
def kustomize_build() -> Callable[[str], list[dict[str, Any]]]:
    cmd = _kustomize_cmd()
    if cmd is None:
        pytest.skip("neither kubectl (kubectl kustomize) nor kustomize is installed")
    cache: dict[str, list[dict[str, Any]]] = {}

    def build(path: str) -> list[dict[str, Any]]:
        if path not in cache:
            out = subprocess.run(
                [*cmd, str(KUSTOMIZE / path)], capture_output=True, text=True, timeout=120, check=False
            )
            assert out.returncode == 0, f"{' '.join(cmd)} {path} failed:\n{out.stderr}"
            cache[path] = load_docs(out.stdout)
        return cache[path]

    return build


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No THOUGHTGUARD_* variable of the test run leaks into settings built from manifests."""
    for key in list(os.environ):
        if key.startswith("THOUGHTGUARD_"):
            monkeypatch.delenv(key)
    return monkeypatch


def gateway_settings(env: dict[str, Any], config_yaml: str | None, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """server.config.Settings as the gateway container would build it from its env and files."""
    from tests.deploy.k8s import SECRET_STAND_INS

    from server.config import Settings

    for name, value in env.items():
        if not name.startswith("THOUGHTGUARD_"):
            continue
        if isinstance(value, dict):  # valueFrom: a Secret
            value = SECRET_STAND_INS[name]
        if name == "THOUGHTGUARD_CONFIG":
            assert config_yaml is not None, "THOUGHTGUARD_CONFIG set but no config.yaml in the ConfigMap"
            path = tmp / "config.yaml"
            path.write_text(config_yaml)
            value = str(path)
        monkeypatch.setenv(name, str(value))
    return Settings()
