"""Schemathesis hooks for paywarden: Stripe's form encoding.

OpenAPI describes an application/x-www-form-urlencoded body as flat key=value pairs; Stripe
(and so paywarden, and every Stripe SDK) nests with brackets: card[number]=...,
metadata[order]=..., enabled_events[0]=... . This serializer writes generated bodies the way
stripe-python does, so schema-valid bodies arrive as the API documents them:

- nested objects as key[sub]=value, lists as key[0]=value, key[1]=value
- booleans as true/false, numbers as their decimal text
- an empty object or list as key= (Stripe's "empty value")
- anything that is not an object (negative tests send those) as JSON text, as the built-in
  serializer does, so the request still reaches the server
"""

import itertools
import json
import uuid
from collections.abc import Mapping
from urllib.parse import quote

import schemathesis


def _scalar(value):
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return str(value)


def _pairs(prefix, value):
    """(encoded name, text) pairs; `prefix` is already percent-encoded."""
    if isinstance(value, Mapping):
        if not value:
            yield prefix, ""
        for key, item in value.items():
            yield from _pairs(f"{prefix}[{quote(str(key), safe='')}]", item)
    elif isinstance(value, (list, tuple)):
        if not value:
            yield prefix, ""
        for index, item in enumerate(value):
            yield from _pairs(f"{prefix}[{index}]", item)
    else:
        yield prefix, _scalar(value)


def encode(body):
    """Stripe's bracket form encoding of one object of parameters.

    Names are percent-encoded segment by segment, so a bracket inside a key arrives as %5B
    (which the server refuses in metadata keys), never as nesting the client did not mean.
    """
    parts = []
    for key, value in body.items():
        if value is None:
            continue
        # A name schemathesis already wrote in deepObject style (card[number]) keeps its brackets.
        head, bracket, rest = str(key).partition("[")
        if bracket and rest.endswith("]"):
            name = f"{quote(head, safe='')}[{quote(rest[:-1], safe='')}]"
        else:
            name = quote(str(key), safe="")
        for encoded, text in _pairs(name, value):
            parts.append(f"{encoded}={quote(text, safe='')}")
    return "&".join(parts).encode("utf-8")


@schemathesis.serializer("application/x-www-form-urlencoded")
def stripe_form(ctx, value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Mapping):
        return encode(value)
    return json.dumps(value).encode("utf-8")


_RUN = uuid.uuid4().hex[:12]
_SENT = itertools.count()


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """Gives every request whose Idempotency-Key the schema allows a key of its own.

    Generated keys repeat ("0", "00", ...), and a repeated key with other parameters is
    answered 400 idempotency_error by design; left alone, that answer would stand in front of
    most of the API. Keys the schema forbids (empty, too long, not printable ASCII) are sent as
    generated, so the server's refusal of them is still tested. Replays and conflicting reuse
    are tested by the stripe-python scenario.
    """
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and 1 <= len(key) <= 255 and all(" " <= c <= "~" for c in key):
        headers["Idempotency-Key"] = f"st-{_RUN}-{next(_SENT)}"
        case.headers = headers
