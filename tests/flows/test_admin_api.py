"""The admin API (issue 16, part 1): tokens only admin clients get, for its audience alone;
each refusal of the boundary (no token, another audience, a user's token, a missing scope,
a scope taken away, a revoked token); users, their sessions, clients, keys and the audit
trail through it; ETags that stop a stale write; cursors that stay right while rows are
inserted; problem details for every error; and an admin client that cannot give or reach
more than it holds."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import timedelta
from importlib.resources import files
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.errors import ValidationError
from authserver.models import AuditEvent, BrowserSession, Client, RefreshFamily, User
from authserver.own_apis import ADMIN_SCOPES
from authserver.runtime import runtime
from authserver.services import clients as client_service
from authserver.services.clients import RegisteredClient
from tests.helpers import (
    PASSWORD,
    account_api_request,
    basic_auth,
    make_client,
    make_user,
    password_login,
    token_request,
)
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver

API = "/admin/v1"


def admin_audience(app: Flask) -> str:
    return runtime(app).config.issuer + API


def make_admin(session: Session, *scopes: str, name: str = "Provisioning") -> RegisteredClient:
    return make_client(
        session,
        name=name,
        grant_types=["client_credentials"],
        first_party=False,
        scopes=[],
        admin_scopes=list(scopes or ADMIN_SCOPES),
    )


def admin_token(app: Flask, http: FlaskClient, admin: RegisteredClient, scope: str = "") -> str:
    form = {"grant_type": "client_credentials", "resource": admin_audience(app)}
    if scope:
        form["scope"] = scope
    answer = token_request(http, admin, **form)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return str(answer.get_json()["access_token"])


class Admin:
    """An admin client's calls, with its bearer token."""

    def __init__(self, http: FlaskClient, token: str) -> None:
        self.http = http
        self.token = token

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> TestResponse:
        sent = {"Authorization": f"Bearer {self.token}", **headers}
        kwargs: dict[str, Any] = {"headers": sent}
        if body is not None:
            kwargs["data"] = json.dumps(body)
            kwargs["content_type"] = "application/json"
        return self.http.open(API + path, method=method, **kwargs)


@pytest.fixture
def admin(app: Flask, session: Session, client: FlaskClient) -> Admin:
    return Admin(client, admin_token(app, client, make_admin(session)))


def problem(answer: TestResponse, status: int, error: str) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with this status and error code."""
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    body = answer.get_json(force=True)
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["error"] == error
    assert isinstance(body["title"], str)
    assert body["title"]
    return dict(body)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def events(session: Session, event_type: str) -> list[AuditEvent]:
    session.expire_all()
    return list(session.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type)))


# -- tokens for the admin API --------------------------------------------------------------


def test_an_admin_client_gets_a_token_for_the_admin_api_alone(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    admin = make_admin(session, "admin:users:read", "admin:audit:read")
    claims = claims_of(admin_token(app, client, admin))
    assert claims["aud"] == admin_audience(app)
    assert claims["aud"] != runtime(app).config.issuer
    assert claims["sub"] == claims["client_id"] == admin.client.client_id
    assert claims["scope"] == "admin:users:read admin:audit:read"
    # Asking for the scope alone names the audience too.
    by_scope = token_request(
        client, admin, grant_type="client_credentials", scope="admin:users:read"
    )
    assert claims_of(by_scope.get_json()["access_token"])["aud"] == admin_audience(app)


def test_admin_tokens_are_refused_to_anyone_not_registered_for_them(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    admin = make_admin(session, "admin:users:read")
    ordinary = make_client(session, grant_types=["client_credentials"], first_party=True)
    audience = admin_audience(app)

    def ask(registered: RegisteredClient, **form: str) -> TestResponse:
        return token_request(client, registered, grant_type="client_credentials", **form)

    # A scope it was not given; an admin scope for another audience.
    assert ask(admin, resource=audience, scope="admin:users:write").get_json()["error"] == (
        "invalid_scope"
    )
    assert (
        ask(admin, resource="https://api.example.test", scope="admin:users:read").get_json()[
            "error"
        ]
        == "invalid_target"
    )
    assert ask(admin, resource=audience, scope="admin:users:read read").get_json()["error"] == (
        "invalid_scope"
    )
    # Not an admin client, even a first-party one.
    assert ask(ordinary, resource=audience).get_json()["error"] == "invalid_target"
    assert ask(ordinary, scope="admin:users:read").get_json()["error"] == "invalid_target"


def test_no_user_grant_reaches_the_admin_api(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    first_party = make_client(session)
    answer = password_login(client, first_party, resource=admin_audience(app))
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_target"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scopes": ["admin:users:read"]}, "is an admin scope"),
        ({"admin_scopes": ["admin:everything"]}, "unknown admin scope"),
        (
            {
                "admin_scopes": ["admin:users:read"],
                "grant_types": ["authorization_code"],
                "redirect_uris": ["https://app.example.test/cb"],
            },
            "client_credentials",
        ),
        (
            {
                "admin_scopes": ["admin:users:read"],
                "public": True,
                "grant_types": ["authorization_code"],
                "redirect_uris": ["https://app.example.test/cb"],
            },
            "confidential",
        ),
    ],
)
def test_admin_scopes_are_registered_only_as_admin_scopes_of_confidential_clients(
    session: Session, options: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"name": "x", "grant_types": ["client_credentials"], **options}
    with pytest.raises(ValidationError, match=message):
        client_service.create_client(session, **fields)


# -- the boundary ---------------------------------------------------------------------------


def test_without_a_token_the_answer_is_a_problem_naming_the_metadata(client: FlaskClient) -> None:
    answer = client.get(API + "/users")
    problem(answer, 401, "invalid_token")
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'resource_metadata="http://localhost/.well-known/oauth-protected-resource/admin/v1"' in (
        challenge
    )


def test_the_protected_resource_metadata_names_the_audience_and_scopes(
    app: Flask, client: FlaskClient
) -> None:
    document = client.get("/.well-known/oauth-protected-resource/admin/v1").get_json()
    assert document["resource"] == admin_audience(app)
    assert document["authorization_servers"] == [runtime(app).config.issuer]
    assert document["scopes_supported"] == list(ADMIN_SCOPES)


def test_tokens_for_another_audience_or_a_user_are_refused(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    first_party = make_client(session, admin_scopes=["admin:users:read"])
    # The same admin client, but its token for the issuer's default audience.
    ordinary = token_request(client, first_party, grant_type="client_credentials").get_json()
    assert claims_of(ordinary["access_token"])["aud"] != admin_audience(app)
    users_token = password_login(client, first_party, **account_api_request(app)).get_json()
    for token in (ordinary["access_token"], users_token["access_token"], "not-a-token"):
        answer = Admin(client, token).call("GET", "/users")
        problem(answer, 401, "invalid_token")


def test_a_missing_scope_is_403_naming_it(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    reader = Admin(client, admin_token(app, client, make_admin(session, "admin:users:read")))
    assert reader.call("GET", "/users").status_code == 200
    answer = reader.call("POST", "/users", {"email": "bob@example.com"})
    body = problem(answer, 403, "insufficient_scope")
    assert "admin:users:write" in body["detail"]
    assert 'scope="admin:users:write"' in answer.headers["WWW-Authenticate"]
    problem(reader.call("GET", "/clients"), 403, "insufficient_scope")
    problem(reader.call("GET", "/keys"), 403, "insufficient_scope")
    problem(reader.call("GET", "/audit-events"), 403, "insufficient_scope")


def test_a_scope_taken_away_or_a_disabled_client_stops_its_tokens_at_once(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered = make_admin(session, "admin:users:read", "admin:audit:read")
    caller = Admin(client, admin_token(app, client, registered))
    assert caller.call("GET", "/users").status_code == 200
    client_service.update_client(
        session, registered.client.client_id, runtime(app).now(), admin_scopes=["admin:audit:read"]
    )
    session.commit()
    problem(caller.call("GET", "/users"), 403, "insufficient_scope")
    assert caller.call("GET", "/audit-events").status_code == 200
    client_service.disable_client(
        session,
        registered.client.client_id,
        runtime(app).now(),
        stale_for=timedelta(0),
        token_ttl=timedelta(hours=1),
    )
    session.commit()
    problem(caller.call("GET", "/audit-events"), 401, "invalid_token")


def test_a_revoked_admin_token_is_refused(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered = make_admin(session)
    token = admin_token(app, client, registered)
    revoked = client.post("/oauth/revoke", data={"token": token}, headers=basic_auth(registered))
    assert revoked.status_code == 200
    problem(Admin(client, token).call("GET", "/users"), 401, "invalid_token")


# -- users ----------------------------------------------------------------------------------


def test_a_user_is_created_read_and_listed_with_an_etag(admin: Admin) -> None:
    created = admin.call("POST", "/users", {"email": "Bob@Example.com", "password": PASSWORD})
    assert created.status_code == 201, created.get_data(as_text=True)
    user = created.get_json()
    assert user["email"] == "bob@example.com"
    assert created.headers["Location"].endswith(f"/admin/v1/users/{user['id']}")
    assert "password" not in json.dumps(user)
    read = admin.call("GET", f"/users/{user['id']}")
    assert read.get_json() == user
    assert read.headers["ETag"] == created.headers["ETag"]
    assert (
        admin.call(
            "GET", f"/users/{user['id']}", **{"If-None-Match": read.headers["ETag"]}
        ).status_code
        == 304
    )
    listed = admin.call("GET", "/users?search=BOB").get_json()
    assert [row["id"] for row in listed["users"]] == [user["id"]]
    problem(admin.call("GET", f"/users/{uuid.uuid4()}"), 404, "not_found")


def test_a_user_without_a_password_signs_in_only_after_a_reset_link(
    app: Flask, admin: Admin, mailbox: Mailbox
) -> None:
    user = admin.call("POST", "/users", {"email": "bob@example.com"}).get_json()
    sent = admin.call("POST", f"/users/{user['id']}/reset-link")
    assert sent.status_code == 202
    assert sent.get_json()["sent_to"] == "bob@example.com"
    deliver(app)
    (mail,) = mailbox.received
    assert mail["To"] == "bob@example.com"


def test_bad_bodies_are_problems_and_change_nothing(admin: Admin, session: Session) -> None:
    for body in ([1], "x", {"email": 5}, {"email": "bob@example.com", "is_admin": True}):
        problem(admin.call("POST", "/users", body), 400, "invalid_request")
    raw = admin.http.post(
        API + "/users",
        data="{not json",
        content_type="application/json",
        headers={"Authorization": f"Bearer {admin.token}"},
    )
    problem(raw, 400, "invalid_request")
    problem(
        admin.call("POST", "/users", {"email": "bob@example.com", "password": "short"}),
        400,
        "invalid_request",
    )
    session.expire_all()
    assert session.scalars(select(User)).all() == []


def test_two_operators_never_overwrite_each_other(admin: Admin, session: Session) -> None:
    user = admin.call("POST", "/users", {"email": "bob@example.com", "password": PASSWORD})
    path = f"/users/{user.get_json()['id']}"
    first_read = admin.call("GET", path).headers["ETag"]
    second_read = admin.call("GET", path).headers["ETag"]

    problem(
        admin.call("PATCH", path, {"email": "robert@example.com"}), 428, "precondition_required"
    )
    won = admin.call("PATCH", path, {"email": "robert@example.com"}, **{"If-Match": first_read})
    assert won.status_code == 200, won.get_data(as_text=True)
    assert won.get_json()["email"] == "robert@example.com"
    assert won.get_json()["email_verified"] is False
    assert won.headers["ETag"] != first_read
    lost = admin.call("PATCH", path, {"email": "rob@example.com"}, **{"If-Match": second_read})
    problem(lost, 412, "precondition_failed")
    assert admin.call("GET", path).get_json()["email"] == "robert@example.com"
    again = admin.call("PATCH", path, {"email_verified": True}, **{"If-Match": won.headers["ETag"]})
    assert again.get_json()["email_verified"] is True
    (changed,) = events(session, "email_changed")
    assert changed.details["method"] == "operator"
    assert changed.details["actor"] == "admin_api"


def test_an_address_taken_or_unverified_by_hand_is_refused(
    admin: Admin, app: Flask, session: Session
) -> None:
    make_user(app, session, "ann@example.com")
    user = admin.call("POST", "/users", {"email": "bob@example.com", "password": PASSWORD})
    path = f"/users/{user.get_json()['id']}"
    tag = user.headers["ETag"]
    problem(
        admin.call("PATCH", path, {"email": "ann@example.com"}, **{"If-Match": tag}),
        400,
        "invalid_request",
    )
    problem(
        admin.call("PATCH", path, {"email_verified": False}, **{"If-Match": tag}),
        400,
        "invalid_request",
    )
    problem(admin.call("PATCH", path, {}, **{"If-Match": tag}), 400, "invalid_request")
    assert admin.call("GET", path).get_json()["email"] == "bob@example.com"


def test_users_page_by_cursor_while_accounts_are_created(
    app: Flask, session: Session, admin: Admin
) -> None:
    for name in ("b", "d", "f", "h", "j"):
        make_user(app, session, f"{name}@example.com")
    seen: list[str] = []
    first = admin.call("GET", "/users?limit=2")
    assert first.headers["Link"].endswith('rel="next"')
    seen += [row["email"] for row in first.get_json()["users"]]
    cursor = first.get_json()["next_cursor"]
    # Accounts made while paging: before the cursor and after it.
    make_user(app, session, "a@example.com")
    make_user(app, session, "e@example.com")
    while cursor:
        answer = admin.call("GET", f"/users?limit=2&cursor={cursor}").get_json()
        seen += [row["email"] for row in answer["users"]]
        cursor = answer["next_cursor"]
    assert len(seen) == len(set(seen))
    assert {f"{n}@example.com" for n in "bdfhj"} <= set(seen)
    assert "a@example.com" not in seen
    problem(admin.call("GET", "/users?cursor=garbage"), 400, "invalid_request")
    problem(admin.call("GET", "/users?limit=0"), 400, "invalid_request")
    problem(admin.call("GET", "/users?limit=abc"), 400, "invalid_request")


def test_disable_enable_and_delete_are_audited_with_the_admin_client_as_actor(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered = make_admin(session)
    admin = Admin(client, admin_token(app, client, registered))
    user = make_user(app, session, "bob@example.com")
    path = f"/users/{user.id}"
    assert admin.call("POST", path + "/disable").get_json()["disabled"] is True
    problem(admin.call("POST", path + "/disable"), 409, "conflict")
    assert admin.call("POST", path + "/enable").get_json()["disabled"] is False
    problem(admin.call("POST", path + "/enable"), 409, "conflict")
    assert admin.call("DELETE", path).status_code == 204
    problem(admin.call("GET", path), 404, "not_found")
    for event_type in ("user_disabled", "user_enabled", "user_deleted"):
        (event,) = events(session, event_type)
        assert event.details["actor"] == "admin_api"
        assert event.details["actor_client_id"] == registered.client.client_id
        assert event.client_id == registered.client.client_id
        assert event.ip_address == "127.0.0.1"


def test_setting_a_password_signs_the_user_out_and_never_reaches_the_trail(
    app: Flask, session: Session, client: FlaskClient, admin: Admin
) -> None:
    user = make_user(app, session, "ann@example.com")
    first_party = make_client(session)
    assert password_login(client, first_party).status_code == 200
    new_password = "a brand new passphrase 42"
    answer = admin.call("PUT", f"/users/{user.id}/password", {"password": new_password})
    assert answer.status_code == 200
    assert answer.get_json()["revoked_families"] == 1
    problem(
        admin.call("PUT", f"/users/{user.id}/password", {"password": "x"}), 400, "invalid_request"
    )
    session.expire_all()
    trail = json.dumps([e.details for e in session.scalars(select(AuditEvent))])
    assert new_password not in trail
    assert password_login(client, first_party, password=new_password).status_code == 200


def test_a_users_sessions_are_listed_and_ended_one_or_all(
    app: Flask, session: Session, client: FlaskClient, admin: Admin
) -> None:
    user = make_user(app, session, "ann@example.com")
    first_party = make_client(session)
    for _ in range(3):
        assert password_login(client, first_party).status_code == 200
    path = f"/users/{user.id}/sessions"
    listed = admin.call("GET", path).get_json()["sessions"]
    assert len(listed) == 3
    assert {row["type"] for row in listed} == {"app"}
    assert admin.call("DELETE", f"{path}/{listed[0]['id']}").status_code == 204
    problem(admin.call("DELETE", f"{path}/{listed[0]['id']}"), 404, "not_found")
    problem(admin.call("DELETE", f"{path}/{uuid.uuid4()}"), 404, "not_found")
    # Another user's session id is not this user's.
    other = make_user(app, session, "bob@example.com")
    problem(admin.call("DELETE", f"/users/{other.id}/sessions/{listed[1]['id']}"), 404, "not_found")
    everything = admin.call("DELETE", path).get_json()
    assert everything == {"revoked_sessions": 0, "revoked_families": 2}
    assert admin.call("GET", path).get_json()["sessions"] == []
    session.expire_all()
    assert all(f.revoked_at is not None for f in session.scalars(select(RefreshFamily)))
    assert (
        session.scalars(select(BrowserSession).where(BrowserSession.revoked_at.is_(None))).all()
        == []
    )


def test_resetting_factors_of_a_user_without_any_is_409(
    app: Flask, session: Session, admin: Admin
) -> None:
    user = make_user(app, session, "ann@example.com")
    problem(admin.call("DELETE", f"/users/{user.id}/second-factors"), 409, "conflict")


# -- clients --------------------------------------------------------------------------------


def test_a_client_is_registered_with_its_secret_shown_once(admin: Admin, session: Session) -> None:
    created = admin.call(
        "POST",
        "/clients",
        {
            "name": "Orders",
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": ["https://orders.example.test/callback"],
            "scopes": ["openid", "orders"],
        },
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    secret = body.pop("client_secret")
    assert len(secret) >= 40
    read = admin.call("GET", f"/clients/{body['client_id']}")
    assert read.get_json() == body
    assert read.headers["ETag"] == created.headers["ETag"]
    assert secret not in read.get_data(as_text=True)
    assert secret not in admin.call("GET", "/clients").get_data(as_text=True)
    # The same rules as the CLI.
    wildcard = {
        "name": "x",
        "grant_types": ["authorization_code"],
        "redirect_uris": ["https://*.example.test/cb"],
    }
    problem(admin.call("POST", "/clients", wildcard), 400, "invalid_request")
    problem(admin.call("POST", "/clients", {"name": "x", "type": "secret"}), 400, "invalid_request")
    problem(admin.call("GET", "/clients/no-such-client"), 404, "not_found")


def test_a_client_update_needs_the_current_etag(admin: Admin) -> None:
    created = admin.call(
        "POST",
        "/clients",
        {"name": "Batch", "grant_types": ["client_credentials"], "scopes": ["read"]},
    )
    path = f"/clients/{created.get_json()['client_id']}"
    tag = created.headers["ETag"]
    problem(admin.call("PATCH", path, {"scopes": ["read", "write"]}), 428, "precondition_required")
    updated = admin.call(
        "PATCH", path, {"scopes": ["read", "write"], "access_token_ttl": 120}, **{"If-Match": tag}
    )
    assert updated.status_code == 200, updated.get_data(as_text=True)
    assert updated.get_json()["scopes"] == ["read", "write"]
    assert updated.get_json()["access_token_ttl"] == 120
    problem(
        admin.call("PATCH", path, {"scopes": []}, **{"If-Match": tag}), 412, "precondition_failed"
    )
    back = admin.call(
        "PATCH", path, {"access_token_ttl": None}, **{"If-Match": updated.headers["ETag"]}
    )
    assert back.get_json()["access_token_ttl"] is None


def test_a_clients_consent_page_links_and_dpop_are_set_changed_and_removed(admin: Admin) -> None:
    created = admin.call(
        "POST",
        "/clients",
        {
            "name": "Orders",
            "grant_types": ["authorization_code"],
            "redirect_uris": ["https://orders.example.test/callback"],
            "logo_uri": "https://orders.example.test/logo.png",
            "policy_uri": "https://orders.example.test/privacy",
            "dpop_bound_access_tokens": True,
        },
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    assert body["logo_uri"] == "https://orders.example.test/logo.png"
    assert body["tos_uri"] is None
    assert body["dpop_bound_access_tokens"] is True
    path = f"/clients/{body['client_id']}"

    changed = admin.call(
        "PATCH",
        path,
        {"logo_uri": "", "tos_uri": "https://orders.example.test/terms"},
        **{"If-Match": created.headers["ETag"]},
    )

    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert changed.get_json()["logo_uri"] is None
    assert changed.get_json()["tos_uri"] == "https://orders.example.test/terms"
    # The consent page shows only https links of the app's own choosing.
    refused = admin.call(
        "PATCH",
        path,
        {"policy_uri": "javascript:alert(1)"},
        **{"If-Match": changed.headers["ETag"]},
    )
    problem(refused, 400, "invalid_request")


def test_an_admin_client_cannot_give_or_take_over_more_than_it_holds(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    strong = make_admin(session, name="Platform")
    clients_only = make_admin(session, "admin:clients:read", "admin:clients:write", name="Support")
    caller = Admin(client, admin_token(app, client, clients_only))
    escalation = {
        "name": "x",
        "grant_types": ["client_credentials"],
        "admin_scopes": ["admin:users:write"],
    }
    problem(caller.call("POST", "/clients", escalation), 403, "insufficient_scope")
    stronger = f"/clients/{strong.client.client_id}"
    problem(caller.call("POST", stronger + "/secret"), 403, "insufficient_scope")
    problem(caller.call("POST", stronger + "/disable"), 403, "insufficient_scope")
    problem(caller.call("DELETE", stronger), 403, "insufficient_scope")
    tag = caller.call("GET", stronger).headers["ETag"]
    problem(
        caller.call("PATCH", stronger, {"scopes": []}, **{"If-Match": tag}),
        403,
        "insufficient_scope",
    )
    itself = f"/clients/{clients_only.client.client_id}"
    problem(caller.call("POST", itself + "/disable"), 409, "conflict")
    problem(caller.call("DELETE", itself), 409, "conflict")
    # Its equals it may manage, and give what it holds.
    equal = caller.call(
        "POST",
        "/clients",
        {
            "name": "y",
            "grant_types": ["client_credentials"],
            "admin_scopes": ["admin:clients:read"],
        },
    )
    assert equal.status_code == 201
    session.expire_all()
    assert session.scalars(select(Client).where(Client.name == "x")).all() == []


def test_secret_rotation_disable_enable_and_delete(
    app: Flask, session: Session, admin: Admin, client: FlaskClient
) -> None:
    batch = make_client(session, grant_types=["client_credentials"], first_party=False)
    path = f"/clients/{batch.client.client_id}"
    rotated = admin.call("POST", path + "/secret", {"immediately": True}).get_json()
    assert rotated["previous_secret_valid_until"] is None
    old = token_request(client, batch, grant_type="client_credentials")
    assert old.status_code == 401
    new = RegisteredClient(client=batch.client, client_secret=rotated["client_secret"])
    assert token_request(client, new, grant_type="client_credentials").status_code == 200
    assert admin.call("POST", path + "/disable").get_json()["disabled"] is True
    problem(admin.call("POST", path + "/disable"), 409, "conflict")
    assert admin.call("DELETE", path).status_code == 204
    problem(admin.call("GET", path), 404, "not_found")
    (event,) = events(session, "client_deleted")
    assert event.details["actor"] == "admin_api"


# -- keys and the trail ---------------------------------------------------------------------


def test_keys_are_listed_rotated_and_withdrawn(admin: Admin, client: FlaskClient) -> None:
    client.get("/.well-known/jwks.json")
    listed = admin.call("GET", "/keys").get_json()["keys"]
    assert [key["state"] for key in listed] == ["current"]
    assert "private" not in json.dumps(listed)
    rotated = admin.call("POST", "/keys/rotate")
    assert rotated.status_code == 201
    assert rotated.get_json()["outcome"] == "next"
    problem(admin.call("POST", "/keys/rotate"), 409, "conflict")
    next_kid = rotated.get_json()["key"]["kid"]
    withdrawn = admin.call("POST", f"/keys/{next_kid}/withdraw")
    assert withdrawn.status_code == 200
    assert withdrawn.get_json()["withdrawn"]["state"] == "withdrawn"
    problem(admin.call("POST", f"/keys/{next_kid}/withdraw"), 409, "conflict")
    problem(admin.call("POST", "/keys/no-such-kid/withdraw"), 404, "not_found")


def test_the_audit_trail_is_filtered_and_paged_newest_first(
    app: Flask, session: Session, admin: Admin
) -> None:
    users = [make_user(app, session, f"user{n}@example.com") for n in range(5)]
    created = admin.call("GET", "/audit-events?type=user_created&limit=2").get_json()
    ids = [event["id"] for event in created["audit_events"]]
    assert ids == sorted(ids, reverse=True)
    cursor = created["next_cursor"]
    make_user(app, session, "late@example.com")  # newer than every page still to come
    while cursor:
        answer = admin.call(
            "GET", f"/audit-events?type=user_created&limit=2&cursor={cursor}"
        ).get_json()
        ids += [event["id"] for event in answer["audit_events"]]
        cursor = answer["next_cursor"]
    assert len(ids) == len(set(ids)) == 5
    mine = admin.call("GET", f"/audit-events?user_id={users[2].id}").get_json()["audit_events"]
    assert [event["user_id"] for event in mine] == [str(users[2].id)]
    later = admin.call("GET", "/audit-events?since=2999-01-01T00:00:00Z").get_json()
    assert later["audit_events"] == []
    assert later["next_cursor"] is None
    for bad in (
        "type=nothing",
        "user_id=42",
        "since=yesterday",
        "since=2026-01-01T00:00:00",
        "cursor=eyJraW5kIjoidXNlcnMifQ",
    ):
        problem(admin.call("GET", f"/audit-events?{bad}"), 400, "invalid_request")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/users?search=%00", None),
        ("POST", "/users", {"email": "a\u0000@example.com"}),
        ("POST", "/users", {"email": "a@example.com", "password": "long enough pass\u0000word"}),
        ("POST", "/keys/ab%00c/withdraw", None),
        ("GET", "/audit-events?client_id=a%00b", None),
        ("GET", "/clients/ab%00", None),
        (
            "POST",
            "/clients",
            {"name": "x", "grant_types": ["client_credentials"], "scopes": ["\u0000"]},
        ),
    ],
)
def test_a_nul_character_anywhere_is_bad_input_never_a_500(
    admin: Admin, method: str, path: str, body: Any
) -> None:
    """PostgreSQL text holds no NUL: the API refuses it before a statement would fail."""
    problem(admin.call(method, path, body), 400, "invalid_request")


def _admin_operations() -> list[tuple[str, str, str]]:
    """(METHOD, path with its variables filled, scope needed) of every admin API operation
    the OpenAPI document lists."""
    document = json.loads(files("authserver").joinpath("openapi.json").read_text("utf-8"))
    operations = []
    for path, item in document["paths"].items():
        if not path.startswith(API + "/"):
            continue
        for method, operation in item.items():
            (requirement,) = operation["security"]
            (scope,) = requirement["adminAccessToken"]
            # A fixed id (the same in every xdist worker): nothing is found by it anyway.
            filled = re.sub(r"\{[^}]+\}", "0b7e6c1e-5d1a-4c3e-9a51-3f2d8c4b6a70", path)
            operations.append((method.upper(), filled.removeprefix(API), scope))
    return operations


ADMIN_OPERATIONS = _admin_operations()


def test_every_operation_of_the_document_is_checked_below() -> None:
    assert len(ADMIN_OPERATIONS) == 25
    assert {scope for _, _, scope in ADMIN_OPERATIONS} == set(ADMIN_SCOPES)


@pytest.mark.parametrize(("method", "path", "scope"), ADMIN_OPERATIONS)
def test_every_operation_refuses_other_tokens_and_a_missing_scope(
    app: Flask, session: Session, client: FlaskClient, method: str, path: str, scope: str
) -> None:
    """Each operation, tried with no token, the admin client's token for another audience, a
    user's token, and an admin token holding every admin scope but the one it needs. None
    reaches the operation, whatever its body would have been."""
    make_user(app, session)
    others = [s for s in ADMIN_SCOPES if s != scope]
    registered = make_client(session, admin_scopes=list(ADMIN_SCOPES))
    ordinary = token_request(client, registered, grant_type="client_credentials").get_json()
    users = password_login(client, registered, **account_api_request(app)).get_json()
    without = admin_token(app, client, registered, scope=" ".join(others))
    for token in ("", ordinary["access_token"], users["access_token"]):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = client.open(API + path, method=method, headers=headers, json={})
        problem(answer, 401, "invalid_token")
    refused = Admin(client, without).call(method, path, {})
    assert (
        problem(refused, 403, "insufficient_scope")["detail"] == f"The '{scope}' scope is needed."
    )
    session.expire_all()
    assert [e.event_type for e in session.scalars(select(AuditEvent))].count("user_created") == 1


def test_every_change_is_audited_with_the_admin_client_as_actor(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    registered = make_admin(session)
    admin = Admin(client, admin_token(app, client, registered))
    client.get("/.well-known/jwks.json")  # the first signing key, made outside the API
    first_party = make_client(session)

    user = admin.call("POST", "/users", {"email": "bob@example.com", "password": PASSWORD})
    path = f"/users/{user.get_json()['id']}"
    assert password_login(client, first_party, "bob@example.com").status_code == 200
    session.expire_all()
    before_calls = max(e.id for e in session.scalars(select(AuditEvent)))
    # The sign-in moved last_sign_in_at: the version to change is the one read now.
    assert admin.call("GET", path).headers["ETag"] != user.headers["ETag"]
    calls = [
        (
            "PATCH",
            path,
            {"email_verified": True},
            {"If-Match": admin.call("GET", path).headers["ETag"]},
        ),
        ("PUT", path + "/password", {"password": "another long passphrase 7"}, {}),
        ("POST", path + "/reset-link", None, {}),
        ("DELETE", path + "/sessions", None, {}),
        ("POST", path + "/disable", None, {}),
        ("POST", path + "/enable", None, {}),
        ("POST", "/clients", {"name": "Batch", "grant_types": ["client_credentials"]}, {}),
        ("POST", "/keys/rotate", None, {}),
        ("DELETE", path, None, {}),
    ]
    for method, call_path, body, headers in calls:
        answer = admin.call(method, call_path, body, **headers)
        assert answer.status_code < 300, (method, call_path, answer.get_data(as_text=True))
    session.expire_all()
    recorded = list(session.scalars(select(AuditEvent).where(AuditEvent.id > before_calls)))
    changes = [e for e in recorded if e.event_type != "token_issued"]
    assert {e.event_type for e in changes} >= {
        "email_verified",
        "password_changed",
        "password_reset_requested",
        "logout_everywhere",
        "user_disabled",
        "user_enabled",
        "client_created",
        "key_rotated",
        "user_deleted",
    }
    for event in changes:
        assert event.details.get("actor") == "admin_api", event.event_type
        assert event.details.get("actor_client_id") == registered.client.client_id
