"""Fuzz the API from its own OpenAPI schema (schemathesis) against the real gateway and real vLLM.

schemathesis generates requests for every operation of ``/openapi.json``; hypothesis drives
them. (schemathesis' pytest plugin does not run under pytest 9, so the strategies are used
directly.)
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.vllm
EXAMPLES = 80  # per operation


def test_no_5xx_and_openai_shaped_errors(gateway_factory: Callable[..., str]) -> None:
    # a small max_tokens cap keeps fuzzed generations short; everything else is the default gateway
    base = gateway_factory(limits={"max_tokens": 16}, upstream={"read_timeout_s": 30})
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    counts: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/health", "/ready"}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            response = case.call(timeout=60)
            bucket = f"{response.status_code // 100}xx"
            counts[bucket] = counts.get(bucket, 0) + 1
            assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
            if response.status_code >= 400:
                err = response.json().get("error")
                assert err is not None and set(err) == {"message", "type", "param", "code"}, response.text[:300]

        run()
    total = sum(counts.values())
    print(f"\nschemathesis: {total} cases over {len(operations)} operations: {counts}")
    assert total >= EXAMPLES and counts.get("5xx", 0) == 0
    assert counts.get("4xx", 0) > 0  # the fuzzer did reach the validation paths
