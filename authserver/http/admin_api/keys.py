"""``/admin/v1/keys``: the signing keys, a rotation, and the withdrawal of a compromised
key, as ``authserver keys ...`` does them (the same services)."""

from __future__ import annotations

from datetime import timedelta

from flask import Response, jsonify

from authserver.db import db
from authserver.errors import Conflict, NotFound
from authserver.http.admin_api import bp
from authserver.http.admin_api.common import admin_endpoint, iso, optional_body
from authserver.http.bearer import AdminCaller
from authserver.models import SigningKey
from authserver.runtime import key_schedule, runtime
from authserver.services import keys as key_service
from authserver.services.revocations import longest_access_token_ttl

READ = "admin:keys:read"
WRITE = "admin:keys:write"


def _key_json(key: SigningKey) -> dict[str, object]:
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "state": key.state.value,
        "created_at": iso(key.created_at),
        "activated_at": iso(key.activated_at),
        "retired_at": iso(key.retired_at),
    }


@bp.get("/keys")
@admin_endpoint(READ)
def list_keys(caller: AdminCaller) -> Response:
    """Every signing key with its state (never a private key)."""
    return jsonify(keys=[_key_json(key) for key in key_service.list_signing_keys(db.session)])


@bp.post("/keys/rotate")
@admin_endpoint(WRITE)
def rotate_key(caller: AdminCaller) -> Response:
    """Publish a next key, which starts signing once every JWKS cache has seen it; with
    ``immediately`` (a compromised key), a new current key at once. 409 while a next key is
    already waiting."""
    body = optional_body()
    immediately = bool(body.boolean("immediately")) if body is not None else False
    if body is not None:
        body.finish()
    rt = runtime()
    schedule = key_schedule(
        rt.config, longest_access_token_ttl(db.session, rt.config.access_token_ttl)
    )
    try:
        rotation = key_service.rotate_signing_key(
            db.session,
            rt.key_cipher,
            rt.config.signing_alg,
            rt.now(),
            immediately=immediately,
            publish_delay=schedule.publish_delay,
        )
    except key_service.NextKeyPending as pending:
        raise Conflict(f"Key {pending} is already waiting to become current.") from None
    response = jsonify(
        outcome=rotation.outcome,
        key=_key_json(rotation.key),
        starts_signing_at=iso(rotation.starts_at),
        discarded_next_keys=rotation.discarded,
    )
    response.status_code = 201
    return response


@bp.post("/keys/<kid>/withdraw")
@admin_endpoint(WRITE)
def withdraw_key(caller: AdminCaller, kid: str) -> Response:
    """Withdraw a compromised key: it never signs again, leaves the JWKS, and every token it
    signed is refused. A current key is replaced by a new one at once."""
    rt = runtime()
    try:
        withdrawal = key_service.withdraw_signing_key(
            db.session,
            rt.key_cipher,
            rt.config.signing_alg,
            kid,
            rt.now(),
            stale_for=timedelta(seconds=rt.config.key_refresh_interval),
            token_ttl=longest_access_token_ttl(db.session, rt.config.access_token_ttl),
        )
    except key_service.UnknownSigningKey:
        raise NotFound("No signing key has this kid.") from None
    except key_service.KeyAlreadyGone as gone:
        raise Conflict(f"The key is {gone} already.") from None
    replacement = withdrawal.replacement
    return jsonify(
        withdrawn=_key_json(withdrawal.withdrawn),
        replacement=_key_json(replacement) if replacement is not None else None,
    )
