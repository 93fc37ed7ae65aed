"""The ``/v1`` gateway's parse errors end with one full stop, never ``..`` (protobuf doubles it).

Every field of every binding's body (nested ones included), and every query parameter, is
given values of the wrong type; each refusal's message must read as one sentence.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.gateway import bindings_of
from sidecar.gateway._bindings import Binding, RequestError, build_request

BINDINGS = bindings_of(pb.DESCRIPTOR.services_by_name.values())

#: Wrong for some type of field each: a word, a fraction, a list, an object, a bool, too big.
BAD_VALUES: list[Any] = ["abc", 1.5, [1], {"x": 1}, True, 99_999_999_999_999_999_999, None]
BAD_QUERY = ["abc", "1.5", "maybe", "99999999999999999999999"]


def documents(message: descriptor.Descriptor, depth: int = 0) -> list[dict[str, Any]]:
    """One document per (field, bad value), nested fields reached through their parents."""
    out: list[dict[str, Any]] = [{"noSuchField": 1}]
    for field in message.fields:
        out.extend({field.json_name: value} for value in BAD_VALUES)
        if (
            field.message_type is not None
            and depth < 3
            and not field.message_type.full_name.startswith("google.")
        ):
            out.extend({field.json_name: inner} for inner in documents(field.message_type, depth + 1))
    return out


def refusals(binding: Binding) -> list[str]:
    path_values = {v.field: "backfills/1" for v in binding.template.variables}
    messages = []
    bodies: list[Any] = []
    if binding.body == "*":
        bodies = documents(binding.method.input_type)
    elif binding.body:
        bound = binding.method.input_type.fields_by_name[binding.body]
        bodies = documents(bound.message_type) if bound.message_type else list(BAD_VALUES)
    for body in bodies:
        try:
            build_request(binding, path_values, [], body)
        except RequestError as exc:
            messages.append(exc.message)
    for key, _ in binding.query_fields():
        for raw in BAD_QUERY:
            try:
                build_request(binding, path_values, [(key, raw)], None)
            except RequestError as exc:
                messages.append(exc.message)
    return messages


def test_no_parse_error_has_a_doubled_full_stop() -> None:
    seen = {message for binding in BINDINGS for message in refusals(binding)}
    assert len(seen) > 50  # the bad values were refused: the check below is over real messages
    doubled = sorted(m for m in seen if ".." in m)
    assert not doubled, doubled[:5]
    # The wrapped messages are still there, each ending once.
    assert (
        "Failed to parse backfill field: Failed to parse maxActiveRuns field: "
        "invalid literal for int() with base 10: 'abc'." in seen
    )
    out_of_range = "Failed to parse backfill field: Failed to parse maxActiveRuns field: Value out of range: "
    assert any(m.startswith(out_of_range) and m.endswith("9.") for m in seen)


def test_a_long_message_is_cut_with_one_ellipsis_character() -> None:
    create = next(b for b in BINDINGS if b.method.name == "CreateBackfill")
    try:
        build_request(create, {}, [], {"noSuchField": 1})
    except RequestError as exc:
        message = exc.message
    else:
        raise AssertionError("an unknown field was accepted")
    assert len(message) == 300 and message.endswith("…") and ".." not in message
