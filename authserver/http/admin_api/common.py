"""What every admin API view shares: the token check and the actor around the view, the
JSON body's fields, ETags, and cursors."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Response, jsonify, request

from authserver.errors import InvalidRequest, PreconditionFailed, PreconditionRequired
from authserver.http.bearer import require_admin_token
from authserver.http.rate_limits import per_ip_bearer_api
from authserver.services.audit import Actor, acting_as

DEFAULT_PAGE = 50
LARGEST_PAGE = 200


def admin_endpoint(scope: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """The view runs for an admin client holding ``scope``, as the first argument; every
    event recorded meanwhile names that client as its actor. Answers are never cached."""

    def wrap(view: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Response:
            caller = require_admin_token(scope)
            _refuse_nul_in_the_url()
            actor = Actor(
                via="admin_api",
                client_id=caller.client_id,
                ip_address=request.remote_addr,
                user_agent=request.user_agent.string,
            )
            with acting_as(actor):
                response = view(caller, *args, **kwargs)
            response.headers["Cache-Control"] = "no-store"
            return response

        limited: Callable[..., Response] = per_ip_bearer_api(guarded)
        return limited

    return wrap


def _refuse_nul_in_the_url() -> None:
    """PostgreSQL text holds no NUL character: a query or path value with one is refused
    here, as bad input, before it reaches a statement (where it would be a 500)."""
    values = [*request.args.keys(), *request.args.values()]
    values += [value for value in (request.view_args or {}).values() if isinstance(value, str)]
    if any("\x00" in value for value in values):
        raise InvalidRequest("A parameter contains a NUL character.")


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or len(value) > 2000 or "\x00" in value:
        raise InvalidRequest(f"The field {name!r} must be a string (without NUL characters).")
    return value


# -- the body -----------------------------------------------------------------------------


class Body:
    """The request's JSON object, read field by field with its type checked; fields not
    read are refused (``finish``), so a misspelt field is an error, never silently ignored."""

    def __init__(self) -> None:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise InvalidRequest("The body must be a JSON object.")
        self._data: dict[str, Any] = data
        self._read: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self._data

    def _get(self, name: str, required: bool) -> Any:
        self._read.add(name)
        if name not in self._data:
            if required:
                raise InvalidRequest(f"The field {name!r} is required.")
            return None
        return self._data[name]

    def _not_null(self, name: str, value: object) -> object:
        # Absent means "leave it"; null is not a value these fields take.
        if value is None and name in self._data:
            raise InvalidRequest(f"The field {name!r} cannot be null.")
        return value

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self._not_null(name, self._get(name, required))
        if value is None:
            return None
        return _text(name, value)

    def boolean(self, name: str) -> bool | None:
        value = self._not_null(name, self._get(name, False))
        if value is None:
            return None
        if not isinstance(value, bool):
            raise InvalidRequest(f"The field {name!r} must be true or false.")
        return value

    def strings(self, name: str) -> list[str] | None:
        value = self._not_null(name, self._get(name, False))
        if value is None:
            return None
        if not isinstance(value, list) or len(value) > 100:
            raise InvalidRequest(f"The field {name!r} must be a list of strings.")
        return [_text(name, item) for item in value]

    def seconds(self, name: str) -> int | None:
        """A lifetime in seconds; null: the server-wide setting."""
        value = self._get(name, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
            raise InvalidRequest(f"The field {name!r} must be a positive number of seconds.")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise InvalidRequest(f"Unknown field {unknown[0][:64]!r}.")


def optional_body() -> Body | None:
    """The body of an action whose fields are all optional: none at all is fine."""
    if not request.get_data(cache=True):
        return None
    return Body()


# -- ETags --------------------------------------------------------------------------------


def etag_of(representation: dict[str, Any]) -> str:
    """A strong validator (RFC 9110 §8.8.3) of a resource's JSON: any change of what GET
    shows changes it."""
    canonical = json.dumps(representation, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def with_etag(representation: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(representation)
    response.status_code = status
    response.set_etag(etag_of(representation))
    return response


def require_if_match(current: dict[str, Any]) -> None:
    """The update was made against the resource as it is now: its ``If-Match`` names the
    current ETag (RFC 9110 §13.1.1), compared strongly. Without one, 428 (RFC 6585 §3)."""
    if "If-Match" not in request.headers:
        raise PreconditionRequired()
    if not request.if_match.contains(etag_of(current)) and not request.if_match.star_tag:
        raise PreconditionFailed()


# -- paging -------------------------------------------------------------------------------


def page_limit() -> int:
    raw = request.args.get("limit", str(DEFAULT_PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= LARGEST_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {LARGEST_PAGE}.")
    return int(raw)


def encode_cursor(position: dict[str, Any]) -> str:
    """An opaque cursor: where the next page starts. Callers pass it back as it is."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(kind: str) -> dict[str, Any] | None:
    """The position in the request's ``cursor``, if any, checked to be one of ``kind``."""
    raw = request.args.get("cursor")
    if raw is None:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        position = None
    if not isinstance(position, dict) or position.get("kind") != kind:
        raise InvalidRequest("The cursor is not one this list gave.")
    return position


def page(name: str, items: list[dict[str, Any]], next_position: dict[str, Any] | None) -> Response:
    """A page of ``items`` under ``name``, with ``next_cursor`` (null on the last page) and
    the same as an RFC 8288 ``Link: rel="next"`` header."""
    cursor = encode_cursor(next_position) if next_position is not None else None
    response = jsonify({name: items, "next_cursor": cursor})
    if cursor is not None:
        args = request.args.to_dict()
        args["cursor"] = cursor
        query = urlencode(sorted(args.items()))
        response.headers["Link"] = f'<{request.base_url}?{query}>; rel="next"'
    return response


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
