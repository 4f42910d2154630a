"""GET /v1/openapi.json: generated from the proto, current, valid OpenAPI, the routes served."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from openapi_spec_validator import validate

from imgate.api.decode import SERVICE
from imgate.api.http.routes import service_routes
from tests.http.conftest import HttpGateway

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_openapi", ROOT / "scripts" / "gen_openapi.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_openapi"] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_document_is_what_the_proto_generates() -> None:
    generator = _generator()
    assert generator.OUTPUT.read_text(encoding="utf-8") == generator.render(), (
        "stale: run python scripts/gen_openapi.py"
    )


async def test_the_served_document_is_valid_and_lists_every_route(http: HttpGateway) -> None:
    async with http.session.get(http.url("/v1/openapi.json")) as response:
        assert response.status == 200
        document = json.loads(await response.read())
    validate(document)  # OpenAPI 3.1, by openapi-spec-validator
    served = {(r.method.lower(), r.template) for r in service_routes(SERVICE)}
    documented = {(verb, path) for path, item in document["paths"].items() for verb in item}
    assert documented == served
    operations = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert operations == {method.name for method in SERVICE.methods}
    schemas = document["components"]["schemas"]
    batch = schemas["imgate.v1.Batch"]["properties"]
    assert batch["createTime"] == {
        "type": "string",
        "format": "date-time",
        "description": batch["createTime"]["description"],
    }
    assert "google.rpc.Status" in schemas
    assert "google.rpc.BadRequest" in schemas
    watch = document["paths"]["/v1/batches/{batch_id}/outcomes"]["get"]
    assert set(watch["responses"]["200"]["content"]) == {
        "application/x-ndjson",
        "text/event-stream",
    }
    upload = document["paths"]["/v1/recipientLists"]["post"]
    assert set(upload["requestBody"]["content"]) == {"text/plain"}
