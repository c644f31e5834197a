"""deploy/kustomize: the base and the cpu-demo and gpu overlays, built by a real kustomize
(`kubectl kustomize`, kustomize's own engine vendored into kubectl), validated against the
Kubernetes OpenAPI schemas and held to the same policy as the Helm chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tests.deploy.conftest import KUSTOMIZE, gateway_settings
from tests.deploy.k8s import (
    ROOT,
    container,
    env_of,
    env_to_path,
    find,
    gpu_requests,
    policy_violations,
    settings_field_paths,
    termination_violations,
    validate_objects,
    wiring_violations,
)

Build = Callable[[str], list[dict[str, Any]]]
OVERLAYS = ["overlays/cpu-demo", "overlays/gpu"]
BUILDS = ["base", *OVERLAYS]


def test_every_overlay_is_tested() -> None:
    found = sorted(f"overlays/{p.name}" for p in (KUSTOMIZE / "overlays").iterdir() if p.is_dir())
    assert found == sorted(OVERLAYS)


@pytest.mark.parametrize("path", BUILDS)
def test_build_validates_against_kubernetes_schemas(kustomize_build: Build, path: str) -> None:
    objs = kustomize_build(path)
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"} <= {
        o["kind"] for o in objs
    }
    validate_objects(objs)


@pytest.mark.parametrize("path", BUILDS)
def test_policy(kustomize_build: Build, path: str) -> None:
    objs = kustomize_build(path)
    assert policy_violations(objs) == []
    assert termination_violations(objs) == []
    assert wiring_violations(objs) == []


@pytest.mark.parametrize("path", BUILDS)
def test_gateway_env_is_what_the_gateway_reads(
    kustomize_build: Build, path: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from guard.policy import Policy

    objs = kustomize_build(path)
    known = settings_field_paths()
    (gw,) = container(objs, "gateway")
    env = env_of(gw)
    for name in env:
        if name.startswith("THOUGHTGUARD_") and name != "THOUGHTGUARD_CONFIG":
            assert env_to_path(name) in known, f"{name} is no gateway setting"
    settings = gateway_settings(env, None, tmp_path, clean_env)
    assert settings.upstream.url == "http://127.0.0.1:8001/v1"
    # The policy ConfigMap (name with content hash) is the one mounted, and it loads.
    (dep,) = find(objs, "Deployment")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    cm_name = volumes["policy"]["configMap"]["name"]
    assert cm_name.startswith("thoughtguard-policy-"), "configMapGenerator hash suffix rolls the pods"
    (cm,) = find(objs, "ConfigMap", cm_name)
    policy = tmp_path / "policy.yaml"
    policy.write_text(cm["data"]["policy.yaml"])
    Policy.load(policy)


def test_base_policy_copy_is_the_shipped_default() -> None:
    shipped = (ROOT / "guard" / "policies" / "default.yaml").read_text()
    assert (KUSTOMIZE / "base" / "policy.yaml").read_text() == shipped, (
        "cp guard/policies/default.yaml deploy/kustomize/base/policy.yaml"
    )


def test_cpu_demo_runs_vllm_on_cpu(kustomize_build: Build) -> None:
    objs = kustomize_build("overlays/cpu-demo")
    assert gpu_requests(objs) == []
    (vllm,) = container(objs, "vllm")
    assert "vllm-cpu-release-repo" in vllm["image"]
    args = vllm["args"]
    assert args[args.index("--port") + 1] == "8001"
    # seeded requests must not meet a chunked prefill on CPU (tests/e2e/test_seeded.py)
    assert "--no-enable-chunked-prefill" in args
    assert int(args[args.index("--max-num-batched-tokens") + 1]) >= int(args[args.index("--max-model-len") + 1])
    template = args[args.index("--chat-template") + 1]
    (dep,) = find(objs, "Deployment")
    assert dep["metadata"]["namespace"] == "thoughtguard-demo"
    mounts = {m["mountPath"]: m["name"] for m in vllm["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    cm_name = volumes[mounts[str(Path(template).parent)]]["configMap"]["name"]
    (cm,) = find(objs, "ConfigMap", cm_name)
    assert Path(template).name in cm["data"]
    (gw,) = container(objs, "gateway")
    assert env_of(gw)["THOUGHTGUARD_UPSTREAM__IMPLICIT_THINK"] == "true"


def test_cpu_demo_chat_template_opens_think() -> None:
    """The demo's chat template renders ChatML and leaves the assistant inside <think>."""
    import jinja2
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    template = env.from_string((KUSTOMIZE / "overlays" / "cpu-demo" / "think-chat-template.jinja").read_text())
    out = template.render(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]},
        ],
        add_generation_prompt=True,
    )
    assert out == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"
    )


def test_gpu_overlay_requests_a_gpu(kustomize_build: Build) -> None:
    objs = kustomize_build("overlays/gpu")
    assert gpu_requests(objs) == ["thoughtguard/vllm: requests.nvidia.com/gpu", "thoughtguard/vllm: limits.nvidia.com/gpu"]
    (vllm,) = container(objs, "vllm")
    assert vllm["image"] == "vllm/vllm-openai:v0.30.0"
    args = vllm["args"]
    assert args[args.index("--reasoning-parser") + 1] == "deepseek_r1"
    (dep,) = find(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    (gw,) = container(objs, "gateway")
    env = env_of(gw)
    assert env["THOUGHTGUARD_WORKERS"] == "4" and gw["resources"]["limits"]["cpu"] == "4"
    assert env["THOUGHTGUARD_HOST"] == "0.0.0.0"  # the patch merged into the base's env, not replaced it


def test_base_alone_is_the_gateway(kustomize_build: Build) -> None:
    objs = kustomize_build("base")
    assert gpu_requests(objs) == []
    assert container(objs, "vllm") == []
    (gw,) = container(objs, "gateway")
    assert gw["image"] == "thoughtguard:0.1.0"
    secret = env_of(gw)["THOUGHTGUARD_AUTH__API_KEYS"]["secretKeyRef"]
    assert secret == {"name": "thoughtguard-api-keys", "key": "api-keys", "optional": True}
