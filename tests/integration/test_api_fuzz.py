"""Schemathesis against the running service's /openapi.json: no input makes a 5xx.

Its own service (the fuzzer creates and revokes keys and runs), real influxd, an admin
key so that every operation is reached past authentication.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.helpers import bearer, running_press

EXAMPLES = int(os.environ.get("RIGDAQ_FUZZ_EXAMPLES", "25"))  # per operation
# CI runs the same examples every time (a failure is reproducible); RIGDAQ_FUZZ_RANDOM=1 explores anew
DERANDOMIZE = os.environ.get("RIGDAQ_FUZZ_RANDOM", "") != "1"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, influxd):
    st = running_press(tmp_path_factory.mktemp("fuzz"), influxd.url)
    yield st
    st.stop()


def test_no_input_makes_a_server_error(fuzzed):
    schema = schemathesis.openapi.from_url(f"{fuzzed.base}/openapi.json")
    headers = bearer(fuzzed.keys["admin"])
    failures, calls = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=DERANDOMIZE)
        def exercise(case):
            nonlocal calls
            response = case.call(base_url=fuzzed.base, headers=headers, timeout=30)
            calls += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r}: "
                                f"{response.status_code} {response.text[:200]}")
            if response.status_code == 201 and case.path == "/api/runs":  # let the next run start too
                fuzzed.call(fuzzed.service.runs.stop(response.json()["id"]))

        exercise()
    assert calls > 200
    assert not failures, "\n".join(failures[:20])
