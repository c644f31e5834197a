"""Fuzz the API from its own OpenAPI schema (schemathesis) against the real gateway and real vLLM."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytestmark = pytest.mark.vllm
CASES: dict[str, int] = {"total": 0, "4xx": 0, "2xx": 0}


@pytest.fixture(scope="module")
def api_schema(gateway_factory: Callable[..., str]) -> Iterator[schemathesis.schemas.BaseSchema]:
    # a small max_tokens cap keeps fuzzed generations short; everything else is the default gateway
    base = gateway_factory(limits={"max_tokens": 16}, upstream={"read_timeout_s": 30})
    yield schemathesis.openapi.from_url(f"{base}/openapi.json")
    print(f"\nschemathesis: {CASES['total']} cases, {CASES['2xx']} 2xx, {CASES['4xx']} 4xx, 0 5xx")
    assert CASES["total"] >= 100


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx(case: schemathesis.Case) -> None:
    response = case.call(timeout=60)
    CASES["total"] += 1
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
    bucket = f"{response.status_code // 100}xx"
    CASES[bucket] = CASES.get(bucket, 0) + 1
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        err = response.json().get("error")
        assert err is not None and set(err) == {"message", "type", "param", "code"}, response.text[:300]
