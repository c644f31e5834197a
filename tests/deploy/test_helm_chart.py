"""The Helm chart, rendered by Helm's own engine (helm-python-sdk binds Helm's Go SDK) for the
default values and every documented variant, linted by Helm, validated against the Kubernetes
OpenAPI schemas, and held to the deployment policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import CHART, NAMESPACE, RELEASE, VARIANTS, gateway_settings, variant_values
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

Render = Callable[..., dict[str, Any]]
FULLNAME = f"{RELEASE}-thoughtguard"


def test_documented_variants_exist() -> None:
    """docs/deployment.md and the ci/ values files describe the same variants."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    assert {"external-upstream", "separate", "gpu", "hpa", "monitoring", "settings"} <= set(VARIANTS)
    for name in VARIANTS[1:]:
        assert f"ci/{name}-values.yaml" in doc, f"docs/deployment.md does not document ci/{name}-values.yaml"


def test_values_schema_is_valid_and_accepts_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)
    for name in VARIANTS[1:]:
        jsonschema.validate(variant_values(name), schema)


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint(helm: Any, variant: str) -> None:
    """`helm lint --strict` through the SDK: no warning, no error (an icon is only recommended)."""
    report = helm.lint(CHART, variant_values(variant), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_render_validates_against_kubernetes_schemas(render: Render, variant: str) -> None:
    objs = render(variant_values(variant))["objects"]
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    validate_objects(objs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_policy_every_container_locked_down(render: Render, variant: str) -> None:
    objs = render(variant_values(variant))["objects"]
    assert policy_violations(objs) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_graceful_termination(render: Render, variant: str) -> None:
    objs = render(variant_values(variant))["objects"]
    assert termination_violations(objs) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_objects_wire_up(render: Render, variant: str) -> None:
    """Selectors select, named ports exist, mounts and ConfigMaps and accounts are defined."""
    objs = render(variant_values(variant))["objects"]
    assert wiring_violations(objs) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_env_is_what_the_gateway_reads(
    render: Render, variant: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every THOUGHTGUARD_* variable names a real settings key (server/config.py), and the
    settings the gateway builds from the pod's env, config file and policy validate."""
    from guard.policy import Policy

    objs = render(variant_values(variant))["objects"]
    (cm,) = find(objs, "ConfigMap", FULLNAME)
    known = settings_field_paths()
    for gw in container(objs, "gateway"):
        env = env_of(gw)
        for name in env:
            if name.startswith("THOUGHTGUARD_") and name != "THOUGHTGUARD_CONFIG":
                assert env_to_path(name) in known, f"{name} is no gateway setting"
        settings = gateway_settings(env, cm["data"].get("config.yaml"), tmp_path, clean_env)
        assert settings.host == "0.0.0.0"
        assert settings.port == 8000
        assert str(settings.guard.policy_file) == "/etc/thoughtguard/policy.yaml"
        mount = {m["mountPath"]: m["name"] for m in gw["volumeMounts"]}
        assert mount["/etc/thoughtguard"] == "config"
        policy = tmp_path / "policy.yaml"
        policy.write_text(cm["data"]["policy.yaml"])
        Policy.load(policy)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_args_parse_with_the_real_cli(render: Render, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's ENTRYPOINT is `thoughtguard serve`; the container's args must parse."""
    import server.cli

    seen: list[Any] = []
    monkeypatch.setattr(server.cli, "serve", lambda args, passthrough: seen.append(args) or 0)
    for gw in container(render(variant_values(variant))["objects"], "gateway"):
        assert "command" not in gw, "the gateway container keeps the image's ENTRYPOINT"
        assert server.cli.main(["serve", *gw.get("args", [])]) == 0
        assert seen[-1].upstream is None and seen[-1].model is None, "the upstream comes from the env"
        assert seen[-1].ready_timeout > 0


def test_probes_hit_the_gateways_real_endpoints(render: Render) -> None:
    from server.routes import router

    routes = {getattr(r, "path", None) for r in router.routes}
    (gw,) = container(render()["objects"], "gateway")
    assert gw["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert gw["livenessProbe"]["httpGet"]["path"] == "/health"
    assert gw["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"/ready", "/health", "/metrics"} <= routes


def test_default_is_sidecar_with_loopback_upstream(render: Render) -> None:
    objs = render()["objects"]
    (dep,) = find(objs, "Deployment")
    names = [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]]
    assert names == ["gateway", "vllm"]
    (gw,) = container(objs, "gateway")
    (vllm,) = container(objs, "vllm")
    assert env_of(gw)["THOUGHTGUARD_UPSTREAM__URL"] == "http://127.0.0.1:8001/v1"
    args = vllm["args"]
    assert args[args.index("--port") + 1] == "8001"
    assert args[args.index("--model") + 1] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert args[args.index("--reasoning-parser") + 1] == "deepseek_r1"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env_of(vllm)["HF_HUB_OFFLINE"] == "0", "an HF id downloads at start"
    # The vLLM port is not on the Service: clients reach the model only through the guard.
    (svc,) = find(objs, "Service")
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    assert not find(objs, "HorizontalPodAutoscaler"), "autoscaling is off by default"
    assert dep["spec"]["replicas"] == 1


def test_separate_topology(render: Render) -> None:
    objs = render(variant_values("separate"))["objects"]
    deps = {d["metadata"]["name"]: d for d in find(objs, "Deployment")}
    assert set(deps) == {FULLNAME, f"{FULLNAME}-vllm"}
    gw_pod = deps[FULLNAME]["spec"]["template"]["spec"]
    assert [c["name"] for c in gw_pod["containers"]] == ["gateway"]
    assert gpu_requests([deps[FULLNAME]]) == [], "gateway pods take no GPU"
    assert deps[f"{FULLNAME}-vllm"]["spec"]["replicas"] == 2
    (gw,) = container(objs, "gateway")
    (vsvc,) = find(objs, "Service", f"{FULLNAME}-vllm")
    assert env_of(gw)["THOUGHTGUARD_UPSTREAM__URL"] == f"http://{FULLNAME}-vllm:{vsvc['spec']['ports'][0]['port']}/v1"
    assert len(find(objs, "PodDisruptionBudget")) == 2


def test_external_upstream_has_no_vllm_and_no_gpu(render: Render) -> None:
    values = variant_values("external-upstream")
    objs = render(values)["objects"]
    assert gpu_requests(objs) == []
    assert container(objs, "vllm") == []
    assert [d["metadata"]["name"] for d in find(objs, "Deployment")] == [FULLNAME]
    (gw,) = container(objs, "gateway")
    env = env_of(gw)
    assert env["THOUGHTGUARD_UPSTREAM__URL"] == values["externalUpstream"]["url"]
    assert env["THOUGHTGUARD_UPSTREAM__API_KEY"]["secretKeyRef"] == {"name": "vllm-upstream-key", "key": "api-key"}
    assert env["THOUGHTGUARD_AUTH__API_KEYS"]["secretKeyRef"]["name"] == "thoughtguard-api-keys"
    (dep,) = find(objs, "Deployment")
    assert "tolerations" not in dep["spec"]["template"]["spec"], "no GPU toleration on gateway-only pods"
    assert not find(objs, "PodMonitor")


def test_gpu_variant(render: Render) -> None:
    objs = render(variant_values("gpu"))["objects"]
    (vllm,) = container(objs, "vllm")
    args = vllm["args"]
    assert args[args.index("--model") + 1] == "/models/R1-Onevision-7B"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--max-model-len") + 1] == "32768"
    assert args[-2:] == ["--limit-mm-per-prompt", '{"image": 2}']
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert env_of(vllm)["HF_HUB_OFFLINE"] == "1"
    (mount,) = [m for m in vllm["volumeMounts"] if m["mountPath"] == "/models"]
    assert mount["readOnly"] is True
    (dep,) = find(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    (claim,) = [v for v in pod["volumes"] if v["name"] == "model"]
    assert claim["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    (gw,) = container(objs, "gateway")
    assert env_of(gw)["THOUGHTGUARD_WORKERS"] == "4" and gw["resources"]["limits"]["cpu"] == "4"


def test_hpa_on_and_off(render: Render) -> None:
    on = render(variant_values("hpa"))["objects"]
    (hpa,) = find(on, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == FULLNAME
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "thoughtguard_requests_in_flight"
    assert "replicas" not in find(on, "Deployment", FULLNAME)[0]["spec"]
    off = render(variant_values("separate"))["objects"]
    assert not find(off, "HorizontalPodAutoscaler")


def test_monitoring_objects(render: Render) -> None:
    objs = render(variant_values("monitoring"))["objects"]
    (sm,) = find(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (pm,) = find(objs, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "vllm-http"
    (rule,) = find(objs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    (gw,) = container(objs, "gateway")
    assert env_of(gw)["THOUGHTGUARD_METRICS_PORT"] == "9100"


def test_api_key_secret_and_settings_file(render: Render) -> None:
    objs = render(variant_values("settings"))["objects"]
    (secret,) = find(objs, "Secret")
    assert secret["stringData"] == {"api-keys": "tg-key-one,tg-key-two"}
    (gw,) = container(objs, "gateway")
    env = env_of(gw)
    assert env["THOUGHTGUARD_AUTH__API_KEYS"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "api-keys"}
    assert env["THOUGHTGUARD_GUARD__MODE"] == "hidden"
    assert env["THOUGHTGUARD_CONFIG"] == "/etc/thoughtguard/config.yaml"
    (dep,) = find(objs, "Deployment")
    assert "checksum/api-keys" in dep["spec"]["template"]["metadata"]["annotations"]
    (default_dep,) = find(render()["objects"], "Deployment")
    assert "THOUGHTGUARD_AUTH__API_KEYS" not in env_of(default_dep["spec"]["template"]["spec"]["containers"][0])


def test_policy_configmap_checksum_rolls_the_pods(render: Render) -> None:
    def checksum_and_policy(values: dict[str, Any]) -> tuple[str, str]:
        objs = render(values)["objects"]
        (dep,) = find(objs, "Deployment")
        (cm,) = find(objs, "ConfigMap")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/policy"], cm["data"]["policy.yaml"]

    shipped = (ROOT / "guard" / "policies" / "default.yaml").read_text()
    default_sum, default_policy = checksum_and_policy({})
    assert default_policy == shipped
    edited = shipped.replace("mode: buffered", "mode: hidden", 1)
    assert edited != shipped
    edited_sum, edited_policy = checksum_and_policy({"policy": {"content": edited}})
    assert edited_policy == edited
    assert edited_sum != default_sum
    assert checksum_and_policy({"policy": {"content": edited}})[0] == edited_sum, "deterministic"
    same_sum, _ = checksum_and_policy({"policy": {"content": shipped}})
    assert same_sum == default_sum, "only a change of content rolls the pods"


def test_chart_policy_copy_is_the_shipped_default() -> None:
    shipped = (ROOT / "guard" / "policies" / "default.yaml").read_text()
    assert (CHART / "files" / "policy.yaml").read_text() == shipped, (
        "cp guard/policies/default.yaml helm/thoughtguard/files/policy.yaml"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"topology": "daemonset"}, "topology"),
        ({"vllm": {"tensorParallelSize": 4}}, "must be at least vllm.tensorParallelSize"),
        ({"externalUpstream": {"enabled": True}}, "url"),
        ({"model": {"source": "pvc"}}, "claimName"),
        ({"gateway": {"mode": "yolo"}}, "mode"),
        ({"gateway": {"port": 0}}, "port"),
        ({"apiKeys": {"create": True}}, "apiKeys.create needs at least one key"),
        ({"replicas": 3}, "replicas"),
    ],
)
def test_bad_values_are_refused(helm: Any, values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as exc:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(exc.value)


def test_notes_give_base_url_and_openai_snippet(render: Render) -> None:
    notes = render()["notes"]
    base_url = f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:8000/v1"
    assert base_url in notes
    assert "from openai import OpenAI" in notes
    assert f'OpenAI(base_url="{base_url}"' in notes
    assert 'model="DeepSeek-R1-Distill-Qwen-7B"' in notes
    # The snippet is Python that compiles.
    snippet = notes.split("Python (pip install openai):", 1)[1].split("\nMetrics", 1)[0]
    compile("\n".join(line[2:] for line in snippet.strip("\n").splitlines()), "NOTES.txt", "exec")
    external = render(variant_values("external-upstream"))["notes"]
    assert "http://vllm.inference.svc.cluster.local:8000/v1" in external
