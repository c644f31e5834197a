"""The checks the chart and the kustomize builds pass are not vacuous: each catches the mistake
it is about on a rendered chart with that one mistake put in."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from tests.deploy.k8s import (
    env_to_path,
    find,
    policy_violations,
    settings_field_paths,
    termination_violations,
    validate_objects,
    wiring_violations,
)


@pytest.fixture
def objs(render: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    return copy.deepcopy(render({"metrics": {"serviceMonitor": {"enabled": True}}})["objects"])


def _containers(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    (dep,) = find(objs, "Deployment")
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


def test_schema_validation_rejects_unknown_and_mistyped_fields(objs: list[dict[str, Any]]) -> None:
    validate_objects(objs)
    _containers(objs)["gateway"]["readinesProbe"] = {"httpGet": {"path": "/ready", "port": "http"}}
    with pytest.raises(AssertionError, match="readinesProbe"):
        validate_objects(objs)
    del _containers(objs)["gateway"]["readinesProbe"]
    _containers(objs)["vllm"]["ports"][0]["containerPort"] = "8001"
    with pytest.raises(AssertionError, match="Deployment"):
        validate_objects(objs)


def test_structural_check_of_prometheus_operator_objects(objs: list[dict[str, Any]]) -> None:
    (sm,) = find(objs, "ServiceMonitor")
    sm["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(Exception, match="intervall"):
        validate_objects(objs)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["vllm"]["securityContext"].update(runAsUser=0), "runAsUser"),
        (lambda c: c["gateway"]["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
        (lambda c: c["gateway"]["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop ALL"),
        (lambda c: c["gateway"]["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
        (lambda c: c["gateway"].pop("readinessProbe"), "readinessProbe"),
        (lambda c: c["vllm"]["startupProbe"].update(failureThreshold=3), "startupProbe"),
        (lambda c: c["vllm"]["resources"]["limits"].pop("memory"), "limits.memory"),
        (lambda c: c["vllm"].update(image="vllm/vllm-openai:latest"), "not pinned"),
    ],
)
def test_policy_catches(objs: list[dict[str, Any]], mutate: Callable[[dict[str, Any]], Any], expected: str) -> None:
    assert policy_violations(objs) == []
    mutate(_containers(objs))
    assert any(expected in e for e in policy_violations(objs)), policy_violations(objs)


def test_termination_catches_short_grace(objs: list[dict[str, Any]]) -> None:
    (dep,) = find(objs, "Deployment")
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30
    assert any("terminationGracePeriodSeconds" in e for e in termination_violations(objs))


def test_wiring_catches_a_selector_that_selects_nothing(objs: list[dict[str, Any]]) -> None:
    (svc,) = find(objs, "Service")
    svc["spec"]["selector"]["app.kubernetes.io/component"] = "gatway"
    errors = wiring_violations(objs)
    assert any("selects no pods" in e for e in errors)
    assert any("ServiceMonitor" in e or "Service/" in e for e in errors)


def test_env_names_are_checked_against_settings() -> None:
    known = settings_field_paths()
    assert env_to_path("THOUGHTGUARD_UPSTREAM__URL") in known
    assert env_to_path("THOUGHTGUARD_AUTH__API_KEYS") in known
    assert env_to_path("THOUGHTGUARD_UPSTREAM__URLL") not in known
    assert env_to_path("THOUGHTGUARD_API_KEYS") not in known
