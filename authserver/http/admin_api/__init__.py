"""The admin API (``/admin/v1``): users, clients, signing keys and the audit trail, for a
company's provisioning scripts, support tools and platform team.

Every endpoint takes an access token whose audience is the admin API and which carries the
scope of its area and verb (``http/bearer.require_admin_token``); such tokens come from
client_credentials, to admin clients only (``own_apis``). Every change is made by the
services the CLI calls, so no rule exists twice, and is audited with the admin client as the
actor (``services/audit.acting_as``). Errors are RFC 9457 problem details
(``errors.error_response``). Resources that can be updated carry an ``ETag``; an update
must send it back in ``If-Match`` (RFC 9110 §13.1.1), so two operators never overwrite each
other silently: 412 on a stale one, 428 without one. Lists page with an opaque cursor over
a stable order (a keyset, never an offset), so rows inserted meanwhile neither repeat nor
skip a row of the pages still to come.
"""

from __future__ import annotations

from flask import Blueprint

from authserver.http.web import csrf
from authserver.own_apis import ADMIN_API_PATH

bp = Blueprint("admin_api", __name__, url_prefix=ADMIN_API_PATH)
csrf.exempt(bp)  # bearer tokens are not sent by browsers on their own: no CSRF to fear

# The routes register themselves on ``bp``.
from authserver.http.admin_api import (  # noqa: E402
    audit_events,
    clients,
    keys,
    users,
)

__all__ = ["audit_events", "bp", "clients", "keys", "users"]
