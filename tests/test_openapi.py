"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, and the live server
keeps to it under generated input (schemathesis against the simulator robot)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import requests

from server.api.openapi import build_openapi
from server.api.routes import build_router
from settings import Settings

HAVE_VALIDATOR = importlib.util.find_spec("openapi_spec_validator") is not None
HAVE_SCHEMATHESIS = importlib.util.find_spec("schemathesis") is not None


@pytest.mark.skipif(not HAVE_VALIDATOR, reason="pip install openapi-spec-validator "
                                                "(requirements-dev.txt)")
def test_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    doc = build_openapi(Settings())
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_route_is_documented_and_nothing_else() -> None:
    routes = {(method.lower(), re.sub(r"<(\w+)>", r"{\1}", regex.pattern[1:-1]
                                      .replace("(?P", "").replace(">[^/]+)", ">")))
              for method, regex, _ in build_router()._routes}
    doc = build_openapi(Settings())
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routes


def test_document_states_this_servers_limits() -> None:
    doc = build_openapi(Settings(max_wait=7.5, max_body=1234))
    for path in ("/task/{task_id}", "/queue/status"):
        wait = next(p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == "wait")
        # Clamped, not refused: no maximum, but the description says where it is.
        assert "maximum" not in wait["schema"] and "7.5 s" in wait["description"]
        reply = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        name = reply["schema"]["$ref"].rsplit("/", 1)[1]
        assert doc["components"]["schemas"][name]["properties"]["timed_out"]["type"] == "boolean"
    assert "1234 bytes" in doc["paths"]["/"]["post"]["requestBody"]["description"]
    dry_run = [p["name"] for p in doc["paths"]["/"]["post"]["parameters"]]
    assert "dry_run" in dry_run and "/validate" in doc["paths"]


def test_served_document_is_public_and_matches(make_server) -> None:
    server = make_server(api_token="openapi-test-token-1234", max_wait=3.0)
    r = requests.get(server.url + "/openapi.json", timeout=5)
    assert r.status_code == 200
    assert r.json() == build_openapi(server.app.settings)


# Loaded by schemathesis (SCHEMATHESIS_HOOKS). Generated Idempotency-Keys repeat (short
# strings are likely), and a key reused with another command is refused by design
# (422 idempotency_key_reused, as the IETF idempotency-key draft says): state no
# schema can express, so that one refusal is not counted as "valid data rejected".
HOOKS = """
import schemathesis


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    try:
        code = response.json().get("code")
    except Exception:
        return True
    return not (type(failure).__name__ == "RejectedPositiveData"
                and response.status_code == 422 and code == "idempotency_key_reused")
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(not HAVE_SCHEMATHESIS, reason="pip install schemathesis "
                                                   "(requirements-dev.txt)")
def test_schemathesis_finds_no_server_error_or_schema_violation(make_server, tmp_path) -> None:
    # Short long-polls keep generated ?wait= requests fast; /events never ends, so a
    # generated request to it would only time out: it is excluded (covered by
    # tests/test_events.py). /robot/stop is kept: it pauses the queue, which only
    # changes later answers in documented ways. No --max-time: with it, fuzzing
    # repeats until the whole budget is spent. --mode all: valid and invalid data,
    # so that negative_data_rejection (the server refuses what the schema forbids)
    # and positive_data_acceptance (it accepts what the schema allows) hold both
    # ways: the document is what a lab's own client can be generated from.
    server = make_server(max_wait=0.5)
    cli = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    hooks = tmp_path / "st_hooks.py"
    hooks.write_text(HOOKS, encoding="utf-8")
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_schema_conformance,response_headers_conformance,"
              "negative_data_rejection,positive_data_acceptance")
    out = subprocess.run(
        [cli, "run", server.url + "/openapi.json", "--checks", checks, "--mode", "all",
         "--exclude-path", "/events", "--max-examples", "20",
         "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261128"), "--no-shrink",
         "--request-timeout", "10", "--warnings", "off"],
        cwd=tmp_path, capture_output=True, text=True, timeout=110,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": str(hooks)})
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "generated" in out.stdout and " passed" in out.stdout
