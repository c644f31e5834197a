"""Shared checks for rendered Kubernetes objects (Helm chart and kustomize builds).

Schema validation uses kubernetes-validate (the Kubernetes OpenAPI schemas, strict: unknown
fields are errors). Prometheus Operator objects have no schema there; they are checked against
the small structural schemas below, which cover every field the chart uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion: preStop sleep actions are
# beta and on by default from 1.30) and the newest the installed schemas know.
MIN_KUBE_VERSION = "1.30.0"
KUBE_VERSIONS = (MIN_KUBE_VERSION, kubernetes_validate.latest_version())

CRD_GROUPS = {"monitoring.coreos.com/v1"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Pod"}
GPU_RESOURCE = re.compile("gpu", re.IGNORECASE)  # nvidia.com/gpu, amd.com/gpu, gpu.intel.com/...


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


# --------------------------------------------------------------------------------------------
# Schema validation


def _duration() -> dict[str, Any]:
    return {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}


_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1}
    },
    "required": ["matchLabels"],
    "additionalProperties": False,
}
_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name"],
}
_NAMESPACE_SELECTOR = {
    "type": "object",
    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
    "additionalProperties": False,
}
_ENDPOINT = {
    "type": "object",
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "path": {"type": "string", "pattern": "^/"},
        "interval": _duration(),
        "scrapeTimeout": _duration(),
    },
    "required": ["port", "path"],
    "additionalProperties": False,
}
_RULE = {
    "type": "object",
    "properties": {
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "alert": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": _duration(),
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "additionalProperties": False,
}
RULE_GROUPS_SCHEMA = {
    "type": "object",
    "properties": {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": _duration(),
                    "rules": {"type": "array", "minItems": 1, "items": _RULE},
                },
                "required": ["name", "rules"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["groups"],
    "additionalProperties": False,
}

# Prometheus Operator kinds: the fields the chart uses, nothing else allowed.
def _monitor_schema(kind: str, endpoints: str) -> dict[str, Any]:
    """ServiceMonitor and PodMonitor differ only in their kind and the name of the endpoint list."""
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": _NAMESPACE_SELECTOR,
                    endpoints: {"type": "array", "minItems": 1, "items": _ENDPOINT},
                },
                "required": ["selector", endpoints],
                "additionalProperties": False,
            },
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
    }


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _monitor_schema("ServiceMonitor", "endpoints"),
    "PodMonitor": _monitor_schema("PodMonitor", "podMetricsEndpoints"),
    "PrometheusRule": {
        "type": "object",
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": RULE_GROUPS_SCHEMA,
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
    },
}


def validate_objects(objs: Iterable[dict[str, Any]]) -> None:
    """Every object against the Kubernetes schemas of each supported version (strict)."""
    for obj in objs:
        api, kind = obj.get("apiVersion"), obj.get("kind")
        where = f"{kind}/{obj.get('metadata', {}).get('name')}"
        if api in CRD_GROUPS:
            # Not in the Kubernetes OpenAPI schemas: skipped there on purpose, checked here.
            assert kind in CRD_SCHEMAS, f"{where}: no structural schema for {api} {kind}"
            jsonschema.validate(obj, CRD_SCHEMAS[kind])
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{where} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


# --------------------------------------------------------------------------------------------
# Walking objects


def pod_templates(objs: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(object, pod metadata, pod spec) for every workload."""
    for obj in objs:
        if obj["kind"] == "Pod":
            yield obj, obj["metadata"], obj["spec"]
        elif obj["kind"] in WORKLOAD_KINDS:
            tpl = obj["spec"]["template"]
            yield obj, tpl.get("metadata", {}), tpl["spec"]


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in obj.get("metadata", {}).get("annotations", {})


def find(objs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def container(objs: Iterable[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [c for _, _, spec in pod_templates(objs) for c in spec["containers"] if c["name"] == name]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    """name -> literal value, or the valueFrom dict."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def gpu_requests(objs: Iterable[dict[str, Any]]) -> list[str]:
    found = []
    for obj, _, spec in pod_templates(objs):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for section in ("requests", "limits"):
                for res in (c.get("resources", {}).get(section) or {}):
                    if GPU_RESOURCE.search(res):
                        found.append(f"{obj['metadata']['name']}/{c['name']}: {section}.{res}")
    return found


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------
# Policy: security, probes, limits, termination


def _sec(c: dict[str, Any], pod: dict[str, Any], key: str) -> Any:
    csc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    return csc[key] if key in csc else psc.get(key)


def _probe_budget(probe: dict[str, Any]) -> int:
    return int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3)) + int(
        probe.get("initialDelaySeconds", 0)
    )


def policy_violations(objs: list[dict[str, Any]]) -> list[str]:
    """Every container: non-root, no privilege escalation, ALL capabilities dropped, read-only
    root with a writable /tmp, requests and limits; long-running ones: liveness and readiness
    probes (vLLM also a startup probe long enough to load a model); images pinned."""
    errors: list[str] = []
    for obj, _, pod in pod_templates(objs):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            if _sec(c, pod, "runAsNonRoot") is not True:
                errors.append(f"{where}: runAsNonRoot is not true")
            uid = _sec(c, pod, "runAsUser")
            if not isinstance(uid, int) or uid == 0:
                errors.append(f"{where}: runAsUser must be a non-zero uid (images like vLLM's default to root)")
            csc = c.get("securityContext") or {}
            if csc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                errors.append(f"{where}: privileged")
            if "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
                errors.append(f"{where}: capabilities do not drop ALL")
            if (csc.get("capabilities") or {}).get("add"):
                errors.append(f"{where}: adds capabilities")
            if csc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: readOnlyRootFilesystem is not true")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            tmp = mounts.get("/tmp")
            if tmp is None or "emptyDir" not in volumes.get(tmp["name"], {}):
                errors.append(f"{where}: read-only root without an emptyDir at /tmp")
            seccomp = (csc.get("seccompProfile") or (pod.get("securityContext") or {}).get("seccompProfile") or {})
            if seccomp.get("type") != "RuntimeDefault":
                errors.append(f"{where}: no RuntimeDefault seccomp profile")
            res = c.get("resources") or {}
            for section, keys in (("requests", ("cpu", "memory")), ("limits", ("cpu", "memory"))):
                for key in keys:
                    if key not in (res.get(section) or {}):
                        errors.append(f"{where}: no {section}.{key}")
            image = c["image"]
            if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
                errors.append(f"{where}: image {image} is not pinned by tag or digest")
            if is_hook(obj):
                continue  # a helm test pod runs once: no probes
            for probe in ("livenessProbe", "readinessProbe"):
                if "httpGet" not in (c.get(probe) or {}):
                    errors.append(f"{where}: no HTTP {probe}")
            if c["name"] == "vllm":
                startup = c.get("startupProbe")
                if not startup or _probe_budget(startup) < 600:
                    errors.append(f"{where}: vLLM needs a startupProbe of at least 10 minutes for model loading")
        if not is_hook(obj) and pod.get("enableServiceLinks") is not False:
            errors.append(f"{obj['metadata']['name']}: enableServiceLinks must be false (THOUGHTGUARD_PORT clash)")
    return errors


def termination_violations(objs: list[dict[str, Any]]) -> list[str]:
    """The pod's grace period covers the gateway's preStop sleep plus its drain timeout; a vLLM
    container in the same pod outlives the gateway's drain."""
    errors: list[str] = []
    for obj, _, pod in pod_templates(objs):
        if is_hook(obj):
            continue
        grace = int(pod.get("terminationGracePeriodSeconds", 30))
        by_name = {c["name"]: c for c in pod["containers"]}
        for c in pod["containers"]:
            pre_c = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            if grace <= pre_c:
                errors.append(f"{obj['metadata']['name']}/{c['name']}: preStop {pre_c} s uses up the grace period {grace} s")
        gw = by_name.get("gateway")
        if gw is None:
            continue
        env = env_of(gw)
        drain = float(env.get("THOUGHTGUARD_DRAIN_TIMEOUT_S", 30))
        pre = gw.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
        where = obj["metadata"]["name"]
        if not pre or pre < 1:
            errors.append(f"{where}: gateway has no preStop sleep (endpoints must deregister first)")
            continue
        if grace <= pre + drain:
            errors.append(f"{where}: terminationGracePeriodSeconds {grace} <= preStop {pre} + drain {drain}")
        vllm = by_name.get("vllm")
        if vllm is not None:
            vpre = vllm.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            if vpre < pre + drain:
                errors.append(f"{where}: vLLM stops (preStop {vpre}) before the gateway drained ({pre} + {drain})")
            if grace <= vpre:
                errors.append(f"{where}: no time left for vLLM to stop after its preStop")
    return errors


def wiring_violations(objs: list[dict[str, Any]]) -> list[str]:
    """Services, PDBs, NetworkPolicies, monitors and HPAs point at things that exist."""
    errors: list[str] = []
    pods = list(pod_templates(objs))

    def pods_for(selector: dict[str, str]) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        return [p for p in pods if not is_hook(p[0]) and selector_matches(selector, p[1].get("labels", {}))]

    def port_names(spec: dict[str, Any]) -> set[str]:
        return {p["name"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}

    for svc in find(objs, "Service"):
        matched = pods_for(svc["spec"]["selector"])
        if not matched:
            errors.append(f"Service/{svc['metadata']['name']} selects no pods")
        for port in svc["spec"]["ports"]:
            tp = port.get("targetPort")
            if isinstance(tp, str) and any(tp not in port_names(s) for _, _, s in matched):
                errors.append(f"Service/{svc['metadata']['name']}: targetPort {tp} missing in a selected pod")
    for pdb in find(objs, "PodDisruptionBudget"):
        if not pods_for(pdb["spec"]["selector"]["matchLabels"]):
            errors.append(f"PodDisruptionBudget/{pdb['metadata']['name']} selects no pods")
    for np in find(objs, "NetworkPolicy"):
        matched = pods_for(np["spec"]["podSelector"].get("matchLabels", {}))
        if not matched:
            errors.append(f"NetworkPolicy/{np['metadata']['name']} selects no pods")
        names = set().union(*(port_names(s) for _, _, s in matched)) if matched else set()
        api_ports = [p["port"] for rule in np["spec"].get("ingress", []) for p in rule.get("ports", [])]
        if "http" not in api_ports:
            errors.append(f"NetworkPolicy/{np['metadata']['name']} does not admit the API port")
        for port in api_ports:
            if isinstance(port, str) and port not in names and port != "vllm-http":
                errors.append(f"NetworkPolicy/{np['metadata']['name']}: port {port} is on no selected pod")
    services = {s["metadata"]["name"]: s for s in find(objs, "Service")}
    for sm in find(objs, "ServiceMonitor"):
        sel = sm["spec"]["selector"]["matchLabels"]
        targets = [s for s in services.values() if selector_matches(sel, s["metadata"].get("labels", {}))]
        if not targets:
            errors.append(f"ServiceMonitor/{sm['metadata']['name']} selects no Service")
        for ep in sm["spec"]["endpoints"]:
            if any(ep["port"] not in {p.get("name") for p in s["spec"]["ports"]} for s in targets):
                errors.append(f"ServiceMonitor/{sm['metadata']['name']}: port {ep['port']} not on the Service")
    for pm in find(objs, "PodMonitor"):
        matched = pods_for(pm["spec"]["selector"]["matchLabels"])
        if not matched:
            errors.append(f"PodMonitor/{pm['metadata']['name']} selects no pods")
        for ep in pm["spec"]["podMetricsEndpoints"]:
            if any(ep["port"] not in port_names(s) for _, _, s in matched):
                errors.append(f"PodMonitor/{pm['metadata']['name']}: port {ep['port']} not on a selected pod")
    deployments = {d["metadata"]["name"]: d for d in find(objs, "Deployment")}
    for hpa in find(objs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = deployments.get(ref["name"])
        if ref["kind"] != "Deployment" or target is None:
            errors.append(f"HPA/{hpa['metadata']['name']} targets a missing {ref['kind']}/{ref['name']}")
        elif "replicas" in target["spec"]:
            errors.append(f"Deployment/{ref['name']} sets replicas although an HPA scales it")
    for obj, _, spec in pods:
        vols = {v["name"] for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] not in vols:
                    errors.append(f"{obj['metadata']['name']}/{c['name']}: mounts undefined volume {m['name']}")
        cms = {v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v}
        for cm in cms - {o["metadata"]["name"] for o in find(objs, "ConfigMap")}:
            errors.append(f"{obj['metadata']['name']}: ConfigMap {cm} is not part of the build")
        sa = spec.get("serviceAccountName")
        if sa and not find(objs, "ServiceAccount", sa):
            errors.append(f"{obj['metadata']['name']}: ServiceAccount {sa} is not part of the build")
    return errors


# --------------------------------------------------------------------------------------------
# The gateway's environment against server/config.py


def settings_field_paths() -> set[tuple[str, ...]]:
    """Every settings key as a path, e.g. ('upstream', 'url')."""
    from pydantic import BaseModel

    from server.config import Settings

    paths: set[tuple[str, ...]] = set()

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            path = prefix + (name,)
            paths.add(path)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, path)

    walk(Settings, ())
    return paths


def env_to_path(name: str) -> tuple[str, ...]:
    return tuple(name.removeprefix("THOUGHTGUARD_").lower().split("__"))


# The valueFrom sources of the gateway's env vars stand in with these.
SECRET_STAND_INS = {"THOUGHTGUARD_AUTH__API_KEYS": "key-one,key-two", "THOUGHTGUARD_UPSTREAM__API_KEY": "sk-upstream"}
