"""The gateway's OpenAPI 3.1 document, generated from the HTTP bindings and the Airflow routes.

The ``/v1`` part comes from the same :class:`~sidecar.gateway._bindings.Binding` objects the
router uses, with schemas derived from the message descriptors (proto3 JSON mapping:
``lowerCamelCase`` property names, int64 as decimal strings, Timestamps as RFC 3339 strings,
enums by name). The ``/api/v2`` part comes from the pydantic models of the Airflow routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.api import field_behavior_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor, descriptor_pb2
from pydantic.json_schema import models_json_schema

from sidecar.gateway import _airflow
from sidecar.gateway._bindings import Binding, Variable, message_of

_REF = "#/components/schemas/"
_FD = descriptor.FieldDescriptor
_INT32 = {_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32}
_UINT32 = {_FD.TYPE_UINT32, _FD.TYPE_FIXED32}
_INT64 = {_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64}
_UINT64 = {_FD.TYPE_UINT64, _FD.TYPE_FIXED64}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
}


def _behaviors(field: descriptor.FieldDescriptor) -> set[int]:
    options = descriptor_pb2.FieldOptions()
    options.ParseFromString(field.GetOptions().SerializeToString())
    return set(options.Extensions[field_behavior_pb2.field_behavior])


class _Schemas:
    """Collects component schemas for the messages and enums it is asked about."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def message(self, message: descriptor.Descriptor) -> dict[str, Any]:
        """A ``$ref`` to the message's schema, adding it (and what it uses) to the components."""
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # breaks cycles
            self.components[message.full_name] = self.object(message, exclude=())
        return {"$ref": _REF + message.full_name}

    def object(self, message: descriptor.Descriptor, exclude: Sequence[str]) -> dict[str, Any]:
        """The inline object schema of a message, without the top-level fields in ``exclude``."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in message.fields:
            if field.name in exclude:
                continue
            schema = self.field(field)
            behaviors = _behaviors(field)
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema["readOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(field.json_name)
            properties[field.json_name] = schema
        out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            out["required"] = required
        return out

    def scalar(self, field: descriptor.FieldDescriptor) -> dict[str, Any]:
        """The schema of one value of the field (ignoring ``repeated``)."""
        kind = field.type
        if kind == _FD.TYPE_MESSAGE:
            return self.message(message_of(field))
        if kind == _FD.TYPE_ENUM:
            enum = field.enum_type
            if enum is None:
                return {}
            return self.enum(enum)
        if kind == _FD.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == _FD.TYPE_STRING:
            return {"type": "string"}
        if kind == _FD.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        if kind in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
            return {"type": "number"}
        if kind in _INT32:
            return {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
        if kind in _UINT32:
            return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
        if kind in _INT64:
            return {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"}
        if kind in _UINT64:
            return {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}
        return {}

    def field(self, field: descriptor.FieldDescriptor) -> dict[str, Any]:
        """The schema of a field."""
        one = self.scalar(field)
        if field.is_repeated:
            return {"type": "array", "items": one}
        return one

    def enum(self, enum: descriptor.EnumDescriptor) -> dict[str, Any]:
        """A ``$ref`` to the enum's schema (values by name)."""
        if enum.full_name not in self.components:
            self.components[enum.full_name] = {"type": "string", "enum": [v.name for v in enum.values]}
        return {"$ref": _REF + enum.full_name}


def _param_name(variable: Variable, index: int, previous: str) -> str:
    if previous.endswith("s") and len(previous) > 1:
        return previous[:-1]
    return f"{variable.field.replace('.', '_')}_{index}"


def openapi_path(binding: Binding) -> tuple[str, list[str]]:
    """The OpenAPI path of a binding and its path parameter names.

    A variable with a sub-pattern (``{name=backfills/*}``) is spelled out as its literal
    segments with one parameter per wildcard (``backfills/{backfill}``), so a client never has
    to put a ``/`` inside a parameter; the router matches the full path either way.
    """
    segments: list[str] = []
    params: list[str] = []
    for part in binding.template.parts:
        if isinstance(part, str):
            segments.append(part)
            continue
        previous = ""
        for i, piece in enumerate(part.segments):
            if piece in ("*", "**"):
                name = (
                    _param_name(part, i, previous) if len(part.segments) > 1 else part.field.replace(".", "_")
                )
                params.append(name)
                segments.append("{" + name + "}")
            else:
                segments.append(piece)
                previous = piece
    path = "/" + "/".join(segments)
    if binding.template.verb:
        path += ":" + binding.template.verb
    return path, params


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer"},
                    "message": {"type": "string"},
                    "status": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["code", "message", "status"],
            }
        },
        "required": ["error"],
    }


def _operation(binding: Binding, schemas: _Schemas) -> tuple[str, dict[str, Any]]:
    path, params = openapi_path(binding)
    parameters: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
        for p in params
    ]
    for name, field in binding.query_fields():
        parameters.append({"name": name, "in": "query", "required": False, "schema": schemas.field(field)})
    operation: dict[str, Any] = {
        "operationId": binding.method.name,
        "tags": [binding.service.name],
        "summary": binding.method.name,
        "parameters": parameters,
    }
    if binding.body == "*":
        bound = [v.field for v in binding.template.variables]
        body_schema = schemas.object(binding.method.input_type, exclude=bound)
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body_schema}},
        }
    elif binding.body:
        field = binding.method.input_type.fields_by_name[binding.body]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.field(field)}},
        }
    result = schemas.message(binding.method.output_type)
    if binding.streaming:
        content = {
            "application/x-ndjson": {
                "schema": {
                    "type": "object",
                    "description": "One JSON object per line: {'result': ...} or, last, {'error': ...}.",
                    "properties": {"result": result, "error": _error_schema()["properties"]["error"]},
                }
            }
        }
    else:
        content = {"application/json": {"schema": result}}
    operation["responses"] = {
        "200": {"description": "OK", "content": content},
        "default": {
            "description": "An error (AIP-193)",
            "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}},
        },
    }
    return path, operation


def _airflow_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    models: list[tuple[type[Any], Any]] = [(m, "serialization") for m in _airflow.MODELS]
    models[0] = (_airflow.BackfillPostBody, "validation")
    _, top = models_json_schema(models, ref_template=_REF + "{model}")
    components: dict[str, Any] = dict(top.get("$defs", {}))
    components["ValidationError"] = {
        "type": "object",
        "properties": {
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string"},
            "type": {"type": "string"},
        },
        "required": ["loc", "msg", "type"],
    }
    components["HTTPValidationError"] = {
        "type": "object",
        "properties": {
            "detail": {
                # Airflow answers a failed backfill check with 422 and a plain string detail.
                "anyOf": [{"type": "array", "items": {"$ref": _REF + "ValidationError"}}, {"type": "string"}]
            }
        },
    }

    def answer(model: str, *codes: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "200": {"description": "Successful Response", "content": _json(model)},
            "422": {"description": "Validation Error", "content": _json("HTTPValidationError")},
        }
        for code in (401, 403, *codes):
            out[str(code)] = {"description": "Error", "content": _json("HTTPExceptionResponse")}
        return out

    backfill_id = {
        "name": "backfill_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
    body = {"required": True, "content": _json("BackfillPostBody")}
    tags = ["Backfill"]
    paths: dict[str, Any] = {
        _airflow.PREFIX: {
            "get": {
                "operationId": "list_backfills",
                "tags": tags,
                "parameters": [
                    {"name": "dag_id", "in": "query", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 50},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    {
                        "name": "order_by",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string"}, "default": ["id"]},
                    },
                ],
                "responses": answer("BackfillCollectionResponse", 400),
            },
            "post": {
                "operationId": "create_backfill",
                "tags": tags,
                "requestBody": body,
                "responses": answer("BackfillResponse", 400, 404, 409, 429, 503),
            },
        },
        _airflow.PREFIX + "/dry_run": {
            "post": {
                "operationId": "create_backfill_dry_run",
                "tags": tags,
                "requestBody": body,
                "responses": answer("DryRunBackfillCollectionResponse", 400, 404, 409, 503),
            }
        },
        _airflow.PREFIX + "/{backfill_id}": {
            "get": {
                "operationId": "get_backfill",
                "tags": tags,
                "parameters": [backfill_id],
                "responses": answer("BackfillResponse", 404),
            }
        },
    }
    for action in ("pause", "unpause", "cancel"):
        paths[f"{_airflow.PREFIX}/{{backfill_id}}/{action}"] = {
            "put": {
                "operationId": f"{action}_backfill",
                "tags": tags,
                "parameters": [backfill_id],
                "responses": answer("BackfillResponse", 404, 409, 429),
            }
        }
    return paths, components


def _json(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + model}}}


def openapi_document(bindings: Sequence[Binding], *, version: str = "0.1.0") -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of the gateway."""
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    for binding in bindings:
        path, operation = _operation(binding, schemas)
        paths.setdefault(path, {})[binding.http_method.lower()] = operation
    airflow_paths, airflow_components = _airflow_paths()
    paths.update(airflow_paths)
    components = {**schemas.components, **airflow_components, "Error": _error_schema()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "airflow-sidecar REST gateway",
            "version": version,
            "description": (
                "The sidecar's gRPC API over HTTP (google.api.http bindings, proto3 JSON, AIP-193 "
                "errors; WatchBackfill as newline-delimited JSON) and Airflow 3.3.2's public "
                "backfill routes under /api/v2/backfills."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"HTTPBearer": []}, {}],
    }
