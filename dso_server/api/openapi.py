"""``/api/openapi.json``: the operator API as an OpenAPI 3.1 document, generated from the route table.

Each route's request body, query parameters and answers are the pydantic models the API validates with
(``models``), turned into JSON Schema by pydantic (OpenAPI 3.1 uses JSON Schema 2020-12 as is). The security
requirement of each operation follows the route's role: ``bearer`` for every protected route, the session
cookie as an alternative on reads.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, RootModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from dso_server.api.auth import COOKIE
from dso_server.api.routes import Route

_PARAMETER = re.compile(r"{(\w+)}")
_REF = "#/components/schemas/{model}"
_EVENT_LINKS = {
    name: {"operationId": operation, "parameters": {parameter: f"$response.body#/{pointer}"}}
    for name, operation, parameter, pointer in (
        ("ModifyEvent", "put_signals_event_id", "event_id", "events/0/event_id"),
        ("CancelEvent", "delete_signals_event_id", "event_id", "events/0/event_id"),
        ("ModifyPublication", "put_publications_publication_id", "publication_id", "publication_id"),
        ("CancelPublication", "delete_publications_publication_id", "publication_id", "publication_id"),
    )
}
_LINKS: dict[tuple[str, int], dict[str, Any]] = {
    ("post_bandwidths", 201): _EVENT_LINKS,
    ("post_tariffs", 201): _EVENT_LINKS,
    **{("post_households", status): {
        name: {"operationId": operation, "parameters": {"connection_point_id": "$response.body#/connection_point_id"}}
        for name, operation in (("Violations", "get_households_connection_point_id_violations"),
                                ("Telemetry", "get_telemetry"), ("Plan", "get_plans"), ("Comfort", "get_comfort"))
    } for status in (200, 201)},
    ("get_transformers", 200): {"TransformerDay": {
        "operationId": "get_transformers_transformer_id",
        "parameters": {"transformer_id": "$response.body#/transformers/0/id"}}},
}
"""How one answer feeds the next request (OpenAPI links): an API client or a stateful test follows them."""
_DESCRIPTIONS = {
    200: "The answer", 201: "Created", 400: "Bad input: the answer names the field and the rule",
    401: "No valid credential", 403: "The credential's role (or a web session) does not allow this",
    404: "Unknown household, group, event, publication or transformer", 409: "The current state forbids this",
    413: "The body is too large", 415: "The body is not sent as application/json",
}


class _Schemas(GenerateJsonSchema):
    """pydantic's JSON Schema, except a ``time``: JSON Schema's ``format: time`` is RFC 3339's full-time, which
    needs an offset ("06:00:00Z"); the profile's local times ("06:00:00") are a pattern instead."""

    def time_schema(self, schema: core_schema.TimeSchema) -> JsonSchemaValue:
        return {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$"}


@functools.cache
def _wrapped(schema_type: Any) -> type[BaseModel]:
    """A pydantic model for ``schema_type``: itself, or a RootModel around a union."""
    if isinstance(schema_type, type) and issubclass(schema_type, BaseModel):
        return schema_type
    members = getattr(schema_type, "__args__", ())
    name = "Or".join(getattr(member, "__name__", "Value") for member in members) or "Body"
    return type(name, (RootModel[schema_type],), {"__module__": __name__})  # type: ignore[valid-type]


def _operation_id(route: Route) -> str:
    words = re.sub(r"[{}]", "", route.path.removeprefix("/api/")).replace(".", "_").split("/")
    return "_".join([route.method.lower(), *(word.replace("-", "_") for word in words if word)]) or route.method


def _schemas(routes: Iterable[Route]) -> tuple[dict[tuple[type[BaseModel], str], dict[str, Any]], dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], str], None] = {}
    for route in routes:
        if route.body is not None:
            wanted[(_wrapped(route.body), "validation")] = None
        for answer in route.answers.values():
            wanted[(answer, "serialization")] = None
    keys = list(wanted)
    refs, document = models_json_schema(keys, ref_template=_REF, schema_generator=_Schemas)  # type: ignore[arg-type]
    return refs, document.get("$defs", {})  # type: ignore[return-value]


def _query_value(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the ``null`` an optional field allows: a query string has no null."""
    schema = {key: value for key, value in schema.items() if key not in ("default", "title")}
    options = [option for option in schema.pop("anyOf", []) if option != {"type": "null"}]
    if len(options) == 1:
        schema.update(options[0])
    elif options:
        schema["anyOf"] = options
    return schema


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PARAMETER.findall(route.path)
    ]
    model_schema = route.query.model_json_schema(ref_template=_REF, schema_generator=_Schemas)
    required = set(model_schema.get("required", ()))
    for name, field_schema in model_schema.get("properties", {}).items():
        schema = _query_value(field_schema)
        description = schema.pop("description", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": schema}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def build_document(routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (pages are left out: they are HTML, not API)."""
    documented = [route for route in routes if route.documented]
    refs, components = _schemas(documented)
    paths: dict[str, dict[str, Any]] = {}
    for route in documented:
        operation: dict[str, Any] = {
            "operationId": _operation_id(route), "summary": route.summary,
            "parameters": _parameters(route),
            "responses": {},
        }
        if route.role is None:
            operation["security"] = []
        else:
            operation["security"] = [{"bearer": []}] + ([{"session": []}] if route.method == "GET" else [])
            operation["description"] = f"Role: {route.role.value}." + (
                f" Audit action: {route.action}." if route.action else "")
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": refs[(_wrapped(route.body), "validation")]}}}
        for status, answer in sorted(route.answers.items()):
            content = ({route.content_type.split(";")[0]: {"schema": {"type": "string"}}}
                       if status == 200 and route.content_type != "application/json"
                       else {"application/json": {"schema": refs[(answer, "serialization")]}})
            operation["responses"][str(status)] = {"description": _DESCRIPTIONS.get(status, "The answer"),
                                                   "content": content}
            if (operation["operationId"], status) in _LINKS:
                operation["responses"][str(status)]["links"] = _LINKS[(operation["operationId"], status)]
        if not any(status < 300 for status in route.answers):
            schema = {"type": "object"} if route.content_type == "application/json" else {"type": "string"}
            operation["responses"]["200"] = {"description": "The document", "content": {
                route.content_type.split(";")[0]: {"schema": schema}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DSO operator API", "version": "1",
            "description": "The operator API of the HEMS-DSO reference implementation's DSO server: households, "
                           "capacity bandwidths and tariffs, what the HEMSs reported, transformers and the audit "
                           "log. Credentials: a bearer token from 'dso-server token create' (role read or operate).",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A token from 'dso-server token create --role read|operate'."},
                "session": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                            "description": "The web pages' session (POST /api/session); reads only."},
            },
        },
    }
