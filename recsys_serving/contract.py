"""One source for what requests may hold: the types that validate them also write /schema.

Handlers declare their body as ``data: SomeRequest`` (a msgspec Struct of
:mod:`recsys_serving.schemas`) and ids in paths or queries as
:class:`~recsys_serving.schemas.IdParam`. Litestar builds the OpenAPI document from those
annotations; this module closes the gaps between what Litestar documents and what it accepts:

- bodies: Litestar converts them leniently (``"11"`` becomes 11). :class:`StrictRequest` decodes
  the body with msgspec in strict mode against the handler's own ``data`` type instead (one
  decode, no second conversion), and names the offending field in the 400.
- request Structs: Litestar's schema drops some msgspec constraints and never says that unknown
  fields are refused; :class:`RequestSchemaPlugin` documents them with msgspec's own JSON Schema.
- optional bodies: Litestar documents every body as required; :class:`OptionalBodyOperation`
  says ``required: false`` where the handler's type admits no body.
- ids in paths and queries: :class:`IdParamPlugin` documents ``IdParam`` as the integer range that
  ``IdParam.parse`` (its type decoder) accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import OpenAPIType, Operation, Reference, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.types import Empty
from litestar.typing import FieldDefinition

from recsys_serving.schemas import MAX_ID, IdParam

TYPE_DECODERS = [(lambda t: t is IdParam, IdParam.parse)]

# the field's dotted path (``rules.price_min``), without list indices
_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
_NAMED_FIELD = re.compile(r"field `([^`]+)`")
_NO_BODY = object()
_DECODERS: dict[BaseRouteHandler, msgspec.json.Decoder | None] = {}


def _body_decoder(handler: BaseRouteHandler) -> msgspec.json.Decoder | None:
    """A strict decoder for the handler's ``data`` type, built once per handler."""
    got = _DECODERS.get(handler, _NO_BODY)
    if got is _NO_BODY:
        param = handler.parsed_fn_signature.parameters.get("data")
        got = _DECODERS[handler] = msgspec.json.Decoder(param.annotation) if param else None
    return got


def body_error(method: str, path: str, exc: msgspec.ValidationError) -> ValidationException:
    """A 400 shaped like Litestar's validation errors, naming the field msgspec complained of."""
    text = str(exc)
    found = _AT_FIELD.search(text) or _NAMED_FIELD.search(text)
    key = found.group(1) if found else "body"
    return ValidationException(
        detail=f"Validation failed for {method} {path}: {key}: {text}",
        extra=[{"key": key, "message": text, "source": "body"}],
    )


def _integral_floats_as_ints(node: Any) -> Any:
    """JSON Schema counts 46.0 as an integer; msgspec's strict mode does not."""
    if isinstance(node, float) and node.is_integer():
        return int(node)
    if isinstance(node, dict):
        return {k: _integral_floats_as_ints(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_integral_floats_as_ints(v) for v in node]
    return node


class StrictRequest(Request):
    """Decodes a JSON body strictly into the handler's declared ``data`` type.

    Strict: a string is never a number (``"11"`` is refused, Litestar would take it as 11).
    A number is what JSON Schema says it is: ``46.0`` is the integer 46 (tried only after the
    fast strict decode failed, so well-formed requests are decoded once).
    """

    async def body(self) -> bytes:
        # One ASGI message holds a small JSON body: take it without Litestar's streaming
        # generator (a few us per request); anything else goes the general way.
        if self._body is Empty and self.is_connected and self._connection_state.body is Empty:
            event = await self.receive()
            if event["type"] == "http.request" and not event.get("more_body", False):
                body = event["body"]
                limit = self.route_handler.resolve_request_max_body_size()
                if limit and len(body) > limit:
                    raise RequestEntityTooLarge
                self.is_connected = False
                self._body = self._connection_state.body = body
                return body
            receive = self.receive

            async def replay():  # a body in several messages: Litestar's way, from the first
                self.receive = receive
                return event

            self.receive = replay
        return await super().body()

    async def json(self) -> Any:
        decoder = _body_decoder(self.route_handler)
        if decoder is None:
            return await super().json()
        raw = await self.body()
        try:
            return decoder.decode(raw or b"null")
        except msgspec.ValidationError as exc:
            error = exc
        except msgspec.DecodeError as exc:
            raise ValidationException(detail=f"JSON is malformed: {exc}") from exc
        try:
            return msgspec.convert(
                _integral_floats_as_ints(msgspec.json.decode(raw or b"null")), decoder.type
            )
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise body_error(self.method, self.url.path, error) from error


def _camel_to_snake(key: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", key).lower()


def _openapi(node: dict) -> Schema | Reference:
    """A JSON Schema dict (msgspec's) as Litestar's OpenAPI objects."""
    if "$ref" in node:
        return Reference(ref=node["$ref"])
    fields: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            value = {name: _openapi(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _openapi(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            value = [_openapi(sub) for sub in value]
        elif key == "type":
            value = OpenAPIType(value)
        fields[_camel_to_snake(key)] = value
    return Schema(**fields)


def _inline(node: Any, components: dict[str, dict]) -> Any:
    """Nested Structs (``rules``, ``rules.boost``) written in place of their ``$ref``: the body's
    schema stays one self-contained component, as Litestar registers it."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return _inline(components[ref.rsplit("/", 1)[1]], components)
        return {k: _inline(v, components) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, components) for v in node]
    return node


class RequestSchemaPlugin(OpenAPISchemaPlugin):
    """Request Structs documented by msgspec, the library that validates them.

    Litestar's own rendering of msgspec constraints drops some (``ge=0`` alone, constraints of
    list items) and never says ``additionalProperties: false``; msgspec's JSON Schema is exact.
    Nested request Structs are inlined.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        tp = field_definition.annotation
        return (
            isinstance(tp, type)
            and issubclass(tp, msgspec.Struct)
            and tp.__struct_config__.forbid_unknown_fields
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator) -> Schema:
        tp = field_definition.annotation
        _, components = msgspec.json.schema_components(
            [tp], ref_template="#/components/schemas/{name}"
        )
        body = _inline(components[tp.__name__], components)
        # registered as a component, so the body refers to it by name like other models
        schema = schema_creator.schema_registry.get_schema_for_field_definition(field_definition)
        for key, value in vars(_openapi(body)).items():
            if value is not None:
                setattr(schema, key, value)
        return schema


@dataclass
class OptionalBodyOperation(Operation):
    """An operation whose body may be omitted: ``data: SomeRequest | None = None``.

    Litestar marks every request body required; a body whose schema admits null is optional.
    """

    def __post_init__(self) -> None:
        body = self.request_body
        if body is not None and not isinstance(body, Reference):
            for media in body.content.values():
                schema = media.schema
                one_of = schema.one_of if isinstance(schema, Schema) else None
                if one_of and any(getattr(o, "type", None) == OpenAPIType.NULL for o in one_of):
                    body.required = False


class IdParamPlugin(OpenAPISchemaPlugin):
    """``IdParam`` as the integers ``IdParam.parse`` accepts."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return field_definition.annotation is IdParam

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator) -> Schema:
        return Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=MAX_ID)


OPENAPI_PLUGINS = [RequestSchemaPlugin(), IdParamPlugin()]
