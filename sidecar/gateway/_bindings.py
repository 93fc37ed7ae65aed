"""HTTP bindings read from the ``google.api.http`` annotations of the service descriptors.

Nothing here is written per route: every method of a service that carries an ``http`` rule
becomes a :class:`Binding` with a compiled path template, its body mapping and whether it
streams. The same bindings drive the router (``_rest``) and the OpenAPI document
(``_openapi``), so the two cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor, descriptor_pb2, json_format
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

_VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Variable:
    """A ``{field=pattern}`` segment group of a path template."""

    field: str
    """The request field path (``name``, ``backfill.name``)."""
    segments: tuple[str, ...]
    """The sub-template's segments (``("backfills", "*")``); ``("*",)`` when none was given."""


@dataclass(frozen=True)
class PathTemplate:
    """A parsed ``google.api.http`` path template such as ``/v1/{name=backfills/*}:pause``."""

    text: str
    parts: tuple[str | Variable, ...]
    """Literal segments, ``*``/``**`` wildcards and variables, in order."""
    verb: str
    """The custom verb after the last ``:`` (``pause``), or empty."""
    regex: re.Pattern[str]
    """Matches the percent-decoded path without the verb; one group per variable."""

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Parse a template.

        Raises:
            ValueError: not a template of the ``google.api.http`` grammar.
        """
        if not text.startswith("/"):
            raise ValueError(f"path template must start with '/': {text!r}")
        body, verb = text[1:], ""
        # The verb follows the last segment; a ':' inside {...} is not a verb.
        close = body.rfind("}")
        colon = body.rfind(":")
        if colon > close:
            body, verb = body[:colon], body[colon + 1 :]
        parts: list[str | Variable] = []
        pieces: list[str] = []
        for token in re.findall(r"\{[^}]*\}|[^/]+", body):
            if token.startswith("{"):
                field, _, pattern = token[1:-1].partition("=")
                segments = tuple(pattern.split("/")) if pattern else ("*",)
                inner = "/".join(_segment_regex(s) for s in segments)
                pieces.append(f"(?P<v{len(parts)}>{inner})")
                parts.append(Variable(field=field, segments=segments))
            else:
                pieces.append(_segment_regex(token))
                parts.append(token)
        regex = "".join("/" + piece for piece in pieces)
        return cls(text=text, parts=tuple(parts), verb=verb, regex=re.compile(regex))

    @property
    def variables(self) -> tuple[Variable, ...]:
        """The variables, in order."""
        return tuple(p for p in self.parts if isinstance(p, Variable))

    def match(self, path: str) -> dict[str, str] | None:
        """The variables' values if ``path`` (raw, percent-encoded) matches, else None."""
        head, verb = path, ""
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            head, verb = path[: len(path) - len(last)] + last.rpartition(":")[0], last.rpartition(":")[2]
        if unquote(verb) != self.verb:
            return None
        decoded = "/".join(unquote(seg) for seg in head.split("/"))
        found = self.regex.fullmatch(decoded)
        if found is None:
            return None
        return {
            part.field: found.group(f"v{i}")
            for i, part in enumerate(self.parts)
            if isinstance(part, Variable)
        }


def _segment_regex(segment: str) -> str:
    if segment == "**":
        return ".+"
    if segment == "*":
        return "[^/]+"
    return re.escape(segment)


@dataclass(frozen=True)
class Binding:
    """One HTTP rule of one RPC."""

    service: descriptor.ServiceDescriptor
    method: descriptor.MethodDescriptor
    http_method: str
    """Upper-case HTTP method."""
    template: PathTemplate
    body: str
    """``""`` (no body), ``"*"`` (the whole request) or a top-level request field name."""

    @property
    def streaming(self) -> bool:
        """Whether the RPC streams responses (server streaming)."""
        return bool(self.method.server_streaming)

    @property
    def grpc_path(self) -> str:
        """``/package.Service/Method``, the gRPC method path."""
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def request_class(self) -> type[Message]:
        """The request message class."""
        return GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[Message]:
        """The response message class."""
        return GetMessageClass(self.method.output_type)

    def query_fields(self) -> list[tuple[str, descriptor.FieldDescriptor]]:
        """Request fields sent as query parameters: every scalar leaf not bound by path or body.

        Nested message fields are flattened to dotted names (``backfill.dag_id``); well-known
        types that map to a JSON string (Timestamp) count as leaves.
        """
        if self.body == "*":
            return []
        bound = {v.field for v in self.template.variables}
        if self.body:
            bound.add(self.body)
        return [(p, f) for p, f in leaf_fields(self.method.input_type) if not _covered(p, bound)]


def _covered(path: str, bound: Iterable[str]) -> bool:
    return any(path == b or path.startswith(b + ".") for b in bound)


_LEAF_MESSAGES = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}


def leaf_fields(
    message: descriptor.Descriptor, prefix: str = "", depth: int = 0
) -> list[tuple[str, descriptor.FieldDescriptor]]:
    """Scalar leaves of a message as (dotted proto field path, field), nested messages flattened."""
    out: list[tuple[str, descriptor.FieldDescriptor]] = []
    for field in message.fields:
        path = prefix + field.name
        if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if message_of(field).full_name in _LEAF_MESSAGES:
                out.append((path, field))
            elif depth < 3 and not _is_repeated(field):
                out.extend(leaf_fields(message_of(field), path + ".", depth + 1))
        else:
            out.append((path, field))
    return out


def message_of(field: descriptor.FieldDescriptor) -> descriptor.Descriptor:
    """The message type of a message field."""
    message = field.message_type
    if message is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return message


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def bindings_of(services: Sequence[descriptor.ServiceDescriptor]) -> list[Binding]:
    """Every HTTP binding (including ``additional_bindings``) of the given services' methods.

    Bindings with a custom verb come first, so that ``/v1/backfills/1:watch`` never falls
    into ``/v1/{name=backfills/*}``.
    """
    out: list[Binding] = []
    for service in services:
        for method in service.methods:
            options = descriptor_pb2.MethodOptions()
            options.ParseFromString(method.GetOptions().SerializeToString())
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
            for one in (rule, *rule.additional_bindings):
                verb = one.WhichOneof("pattern")
                if verb not in _VERBS:
                    continue
                template = PathTemplate.parse(getattr(one, verb))
                out.append(Binding(service, method, verb.upper(), template, one.body))
    out.sort(key=lambda b: (b.template.verb == "", -len(b.template.parts)))
    return out


class RequestError(ValueError):
    """The HTTP request cannot become the RPC's request message."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _set_path(target: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = target
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise RequestError(f"{path}: {key} is not an object", path)
        node = child
    node[keys[-1]] = value


def _query_value(field: descriptor.FieldDescriptor, path: str, raw: str) -> Any:
    """A query-string value in the form ``json_format`` parses for this field's type."""
    kind = field.type
    if kind == descriptor.FieldDescriptor.TYPE_BOOL:
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise RequestError(f"{path}: expected true or false, got {raw[:40]!r}", path)
    if kind in (
        descriptor.FieldDescriptor.TYPE_DOUBLE,
        descriptor.FieldDescriptor.TYPE_FLOAT,
    ):
        try:
            return float(raw)
        except ValueError:
            raise RequestError(f"{path}: expected a number, got {raw[:40]!r}", path) from None
    if kind == descriptor.FieldDescriptor.TYPE_BYTES:
        return raw
    if kind == descriptor.FieldDescriptor.TYPE_ENUM and re.fullmatch(r"-?[0-9]{1,10}", raw):
        return int(raw)
    if kind in _INTEGER_TYPES:
        if not re.fullmatch(r"-?[0-9]{1,20}", raw):
            raise RequestError(f"{path}: expected an integer, got {raw[:40]!r}", path)
        return int(raw)
    return raw


_INTEGER_TYPES = {
    descriptor.FieldDescriptor.TYPE_INT32,
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT32,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT32,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_FIXED32,
    descriptor.FieldDescriptor.TYPE_FIXED64,
    descriptor.FieldDescriptor.TYPE_SFIXED32,
    descriptor.FieldDescriptor.TYPE_SFIXED64,
}


def build_request(
    binding: Binding,
    path_values: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: Any,
) -> Message:
    """The RPC request from the path variables, the query string and the decoded JSON body.

    ``body`` is the decoded JSON (None when the request had none). Path variables win over
    the body; query parameters may only name fields that neither the path nor the body binds.

    Raises:
        RequestError: unknown query parameter, wrong type, or a body that is not valid
            proto3 JSON for the bound field.
    """
    document: dict[str, Any] = {}
    if binding.body == "*":
        if body is not None and not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        document = dict(body or {})
    elif binding.body:
        if body is not None:
            document[binding.body] = body
    elif body not in (None, {}, ""):
        raise RequestError(f"{binding.http_method} {binding.template.text} takes no request body")
    fields = dict(binding.query_fields())
    fields.update({_camel(path): field for path, field in list(fields.items())})
    repeated: dict[str, list[Any]] = {}
    for given, raw in query:
        field = fields.get(given)
        if field is None:
            raise RequestError(f"unknown query parameter {given[:80]!r}", given)
        key = _snake(given, binding.method.input_type)
        value = _query_value(field, key, raw)
        if _is_repeated(field):
            repeated.setdefault(key, []).append(value)
        elif key in repeated or _has_path(document, key):
            raise RequestError(f"query parameter {key!r} given more than once", key)
        else:
            _set_path(document, key, value)
            repeated.setdefault(key, [])
    for key, values in repeated.items():
        if values:
            _set_path(document, key, values)
    for field_path, value in path_values.items():
        _set_path(document, field_path, value)
    _check_timestamps(document, binding.method.input_type, "")
    _fill_offsets(document, binding.method.input_type)
    request = binding.request_class()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=False, max_recursion_depth=32)
    except json_format.ParseError as exc:
        raise RequestError(_short(_parse_message(exc)), _field_of(str(exc))) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise RequestError(_short(_parse_message(exc))) from None
    return request


def _camel(path: str) -> str:
    return ".".join(re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), seg) for seg in path.split("."))


def _snake(path: str, message: descriptor.Descriptor) -> str:
    """The proto field path of a query key given with proto names or JSON names."""
    out = []
    for seg in path.split("."):
        field = message.fields_by_name.get(seg) or next(
            (f for f in message.fields if f.json_name == seg), None
        )
        if field is None:
            return path
        out.append(field.name)
        if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            message = message_of(field)
    return ".".join(out)


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def _check_timestamps(document: Any, message: descriptor.Descriptor, prefix: str) -> None:
    """Refuse Timestamp strings that are not RFC 3339 (protobuf lets offsets like +25:00 pass)."""
    if not isinstance(document, dict):
        return
    for key, value in document.items():
        field = message.fields_by_name.get(key) or next(
            (f for f in message.fields if f.json_name == key), None
        )
        if field is None or field.type != descriptor.FieldDescriptor.TYPE_MESSAGE:
            continue
        path = prefix + field.name
        if message_of(field).full_name == "google.protobuf.Timestamp":
            values = value if isinstance(value, list) else [value]
            for one in values:
                if not isinstance(one, str):
                    continue
                found = _RFC3339.fullmatch(one)
                if found is None or (
                    found.group(3) and (int(found.group(3)) > 23 or int(found.group(4)) > 59)
                ):
                    raise RequestError(f"{path}: not an RFC 3339 timestamp: {one[:60]!r}", path)
        elif not field.is_repeated:
            _check_timestamps(value, message_of(field), path + ".")


#: A Timestamp field ``x`` with a sibling ``x`` + this suffix keeps the offset it was written in.
OFFSET_SUFFIX = "_utc_offset_seconds"


def _fill_offsets(document: Any, message: descriptor.Descriptor) -> None:
    """Fill ``<field>_utc_offset_seconds`` from the offset of an RFC 3339 ``<field>`` (unless given).

    A Timestamp is an instant: ``2024-01-01T00:00:00+05:30`` parses to 2023-12-31T18:30Z
    and the ``+05:30`` is lost, yet Airflow names a run on that bound with it. Where the
    message has a sibling offset field, the offset the caller wrote goes there.
    """
    if not isinstance(document, dict):
        return
    for key, value in list(document.items()):
        field = message.fields_by_name.get(key) or next(
            (f for f in message.fields if f.json_name == key), None
        )
        if field is None or field.type != descriptor.FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
            continue
        if message_of(field).full_name != "google.protobuf.Timestamp":
            _fill_offsets(value, message_of(field))
            continue
        sibling = message.fields_by_name.get(field.name + OFFSET_SUFFIX)
        found = _RFC3339.fullmatch(value) if isinstance(value, str) else None
        if sibling is None or found is None or found.group(3) is None:
            continue
        if sibling.name in document or sibling.json_name in document:
            continue  # given explicitly: the server checks it
        sign = -1 if found.group(2).startswith("-") else 1
        document[sibling.name] = sign * (int(found.group(3)) * 3600 + int(found.group(4)) * 60)


def _has_path(document: dict[str, Any], path: str) -> bool:
    node: Any = document
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _parse_message(exc: BaseException) -> str:
    """``exc``'s message with one full stop where protobuf's parser doubled it.

    ``json_format`` wraps a field's error as ``Failed to parse {name} field: {error}.``, a
    stop appended whether or not the wrapped message had one: nested fields came out as
    ``...: 'abc'..`` or ``'int'...``. Each wrapped message (its ``__cause__``) is rebuilt
    first and then ended with exactly one stop.
    """
    text = str(exc)
    cause = exc.__cause__
    if cause is None:
        return text
    inner = str(cause)
    if not inner:
        return text
    head, found, tail = text.rpartition(inner)
    if not found or tail != ".":  # not a wrapping that appended a stop
        return text
    inner = _parse_message(cause)
    return head + (inner if inner.endswith(".") else inner + ".")


def _short(text: str) -> str:
    """At most 300 characters; a cut one ends in an ellipsis (one character, not "...")."""
    return text if len(text) <= 300 else text[:299] + "…"


def _field_of(message: str) -> str:
    found = re.search(r'field "?([A-Za-z0-9_.]+)"?', message)
    return found.group(1) if found else ""
