"""Never a 500 for bad input, and never a response that breaks the schema: schemathesis generates requests from the app's own OpenAPI schema (valid and
invalid bodies, queries and paths for every operation) and sends them to the real server with a loaded model.

State-changing operations are exercised too: the server has an API key that the generated requests do not
carry, so they must end in 401 (or a 4xx for what is checked before the key), never in a 5xx.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from serving import start_server
from xlqa.config import ServeConfig
from xlqa.server.app import create_app

schemathesis = pytest.importorskip("schemathesis")

SCHEMA = schemathesis.openapi.from_dict(create_app(ServeConfig()).openapi())
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
CONFORMANCE = [schemathesis.checks.response_schema_conformance, schemathesis.checks.content_type_conformance]
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# invalid requests can be made only where there is a body or a query to break (a bare path takes any string)
CASES = [(label, POSITIVE) for label in sorted(OPERATIONS)] + [
    (label, NEGATIVE) for label, op in sorted(OPERATIONS.items()) if len(op.body) or len(op.query)
]


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XLQA_API_KEY", "fuzz-key")
    cfg = ServeConfig(
        model=[str(tiny_model_dir)], runs=str(tmp_path_factory.mktemp("fuzz-store")), precision="fp32",
        max_seq_length=128, doc_stride=32, max_context_chars=5000, max_batch_items=20,
    )  # fmt: skip
    try:
        with start_server(cfg, wait_ready=True) as base:
            yield base
    finally:
        mp.undo()


def test_the_schema_lists_every_route():
    assert {
        "POST /v1/answer",
        "POST /v1/answer/batch",
        "POST /hf",
        "GET /v1/runs",
        "POST /v1/jobs/evaluate",
    } <= set(OPERATIONS)


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label} {mode.value}" for label, mode in CASES])
def test_no_server_error_for_any_generated_request(url, label, mode):
    operation = OPERATIONS[label]
    codes = []

    @settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=url, timeout=30)
        codes.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:400]}\n"
            f"body {str(case.body)[:300]!r} query {case.query!r}"
        )
        # and what comes back is what the schema says: a body of the declared shape and content type
        case.validate_response(response, checks=CONFORMANCE)

    check()
    if mode is NEGATIVE:  # invalid requests were made, and refused as the client's fault
        assert any(400 <= c < 500 for c in codes), codes
