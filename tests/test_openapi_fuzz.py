"""Schemathesis fuzzes every route from /openapi.json: no 5xx, and every answer matches the document."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from bot.openapi import document
from bot.web_identity import add_to_openapi
from bot.web import create_app
from bot.web_settings import WebSettings
from webbot import EndlessLLM, load_bot, write_bot



def _app(root: Path) -> Flask:
    bot = load_bot(write_bot(root), llm=EndlessLLM())
    return create_app(bot, env={}, admin_token="fuzz-admin-token", rate_limits="off",
                      conversation_rate_limits="off")


def _schema(root: Path) -> schemathesis.schemas.BaseSchema:
    # 413 is the right answer to a body over BOT_MAX_BODY_BYTES, which a schema-violating case may produce
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]}}})
    return schemathesis.openapi.from_wsgi("/openapi.json", _app(root), config=config)


# schemathesis needs the schema at collection time (its from_fixture does not work with pytest 9)
FUZZ_ROOT = Path(tempfile.mkdtemp(prefix="hybridbot-fuzz-"))
schema = _schema(FUZZ_ROOT)


@pytest.fixture(scope="module", autouse=True)
def _remove_fuzz_bot() -> Iterator[None]:
    yield
    shutil.rmtree(FUZZ_ROOT, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_match_the_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = _app(tmp_path)
    spec = add_to_openapi(document(WebSettings()))
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        path = (rule.rule.replace("<cid>", "{conversation_id}").replace("<asset:name>", "{asset}")
                .replace("<path:user_id>", "{user_id}").replace("<language:lang>", "{lang}"))
        served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented
    assert spec["openapi"] == "3.1.0"


def test_document_is_valid_openapi_3_1() -> None:
    import jsonschema_rs
    from schemathesis.specs.openapi.definitions import OPENAPI_31  # the official 3.1 meta-schema

    errors = [str(e) for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(document(WebSettings()))]
    assert errors == []


def test_documented_limits_follow_the_settings() -> None:
    spec = document(WebSettings(max_message_chars=300))
    message = spec["components"]["schemas"]["ChatRequest"]["properties"]["message"]
    assert message["maxLength"] == 300


@pytest.mark.parametrize("status", [400, 401, 404, 405, 409, 413, 415, 422, 429, 500, 503])
def test_every_error_status_has_the_error_schema(status: int) -> None:
    spec = document(WebSettings())
    response = spec["components"]["responses"][f"E{status}"]
    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
