"""Passkeys (issue 15, part 1): registered from the account page, signing in without a
password and as the second step after it, with a software authenticator that really signs
(tests/soft_authenticator.py). What must be refused is tried: a challenge used twice or too
late, another origin or RP ID, a removed credential, another account's credential at the
second step, a counter going backwards (a clone), changes without a recent sign-in, a JSON
post without the CSRF token, malformed bodies."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.db import db
from authserver.http.web import session_policy
from authserver.models import AuditEvent, BrowserSession, Passkey, PasskeyChallenge
from authserver.runtime import runtime
from authserver.services.browser_sessions import StartedSession
from authserver.services.clients import RegisteredClient
from authserver.services.passkeys import (
    PasskeyCloneSuspected,
    PasskeyRefused,
    relying_party,
    sign_in_options,
    sign_in_with_passkey,
)
from authserver.services.second_factor_enrolment import reset_second_factors
from authserver.services.sign_in import RequestContext
from authserver.services.users import find_user_by_email
from tests.browser_helpers import (
    authorize_url,
    csrf_token_of,
    pkce_pair,
    query_of,
    sign_in,
    signed_in_as,
    web_client,
)
from tests.flows.test_acr import MFA_ACR, authorize, claims_of, follow_to_client, tokens_from
from tests.helpers import HANG_SECONDS, Clock, make_user, wait_until, waiting_on_a_lock
from tests.smtp_servers import Mailbox
from tests.soft_authenticator import SoftAuthenticator
from tests.test_mail import deliver, parts

EMAIL = "ann@example.com"
ORIGIN = "http://127.0.0.1:8000"
RP_ID = "127.0.0.1"


def post_json(http: FlaskClient, path: str, body: Any, csrf: str) -> TestResponse:
    return http.post(
        path, data=json.dumps(body), content_type="application/json", headers={"X-CSRFToken": csrf}
    )


def csrf_of(http: FlaskClient, path: str) -> str:
    return csrf_token_of(http.get(path))


def add_passkey(
    http: FlaskClient, authenticator: SoftAuthenticator, name: str = "Laptop", **kwargs: Any
) -> TestResponse:
    csrf = csrf_of(http, "/account")
    options = post_json(http, "/account/passkeys/options", {}, csrf)
    assert options.status_code == 200, options.get_data(as_text=True)
    credential = authenticator.register(options.get_json(), **kwargs)
    return post_json(http, "/account/passkeys", {"credential": credential, "name": name}, csrf)


def passwordless(
    http: FlaskClient, authenticator: SoftAuthenticator, **kwargs: Any
) -> TestResponse:
    csrf = csrf_of(http, "/login?prompt=login")
    options = post_json(http, "/login/passkey/options", {}, csrf)
    assert options.status_code == 200
    assert options.get_json()["allowCredentials"] == []
    credential = authenticator.get_assertion(options.get_json(), **kwargs)
    return post_json(http, "/login/passkey", {"credential": credential, "next": "/account"}, csrf)


@pytest.fixture
def authenticator() -> SoftAuthenticator:
    return SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)


@pytest.fixture
def registered(
    app: Flask,
    session: Session,
    client: FlaskClient,
    clock: Clock,
    authenticator: SoftAuthenticator,
) -> SoftAuthenticator:
    """Ann, with the passkey "Laptop" added from the account page, then signed out."""
    make_user(app, session)
    assert sign_in(client).status_code == 303
    added = add_passkey(client, authenticator)
    assert added.status_code == 200, added.get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/account")})
    assert signed_in_as(client) is None
    return authenticator


def live_session(session: Session) -> BrowserSession:
    """The one browser session not ended (the tests sign out, or sign in again, before)."""
    session.expire_all()
    return session.scalars(select(BrowserSession).where(BrowserSession.revoked_at.is_(None))).one()


def audit_events(session: Session, event_type: str) -> list[AuditEvent]:
    session.expire_all()
    return list(session.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type)))


def the_passkey(session: Session) -> Passkey:
    session.expire_all()
    return session.scalars(select(Passkey)).one()


# -- registering ---------------------------------------------------------------------------


def test_a_passkey_is_registered_stored_and_the_user_told(
    app: Flask, session: Session, mailbox: Mailbox, registered: SoftAuthenticator
) -> None:
    passkey = the_passkey(session)
    assert passkey.credential_id == registered.credential_id
    assert passkey.name == "Laptop"
    assert passkey.sign_count == 0
    assert passkey.backup_eligible is False
    assert passkey.transports == "internal"
    user = find_user_by_email(session, EMAIL)
    assert user is not None
    assert passkey.user_id == user.id
    assert registered.user_handle == user.id.bytes
    assert len(audit_events(session, "passkey_added")) == 1
    deliver(app)
    (notice,) = mailbox.received
    assert 'a passkey ("Laptop") was added' in parts(notice)["text/plain"]


def test_registration_options_require_a_discoverable_credential_and_exclude_the_accounts(
    registered: SoftAuthenticator, client: FlaskClient
) -> None:
    assert passwordless(client, registered).status_code == 200
    options = post_json(client, "/account/passkeys/options", {}, csrf_of(client, "/account"))
    body = options.get_json()
    assert body["rp"] == {"id": RP_ID, "name": "authserver"}
    assert body["authenticatorSelection"]["residentKey"] == "required"
    assert body["authenticatorSelection"]["userVerification"] == "required"
    assert [c["id"] for c in body["excludeCredentials"]] == [
        json.loads(json.dumps(registered.register(body)))["id"]
    ]


def test_a_registration_for_another_origin_or_rp_id_is_refused(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303
    phished = add_passkey(client, SoftAuthenticator(origin="https://evil.example", rp_id=RP_ID))
    other_rp = add_passkey(client, SoftAuthenticator(origin=ORIGIN, rp_id="evil.example"))
    unverified = add_passkey(client, SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID), verified=False)
    for refused in (phished, other_rp, unverified):
        assert refused.status_code == 400
        assert refused.get_json()["error"] == "passkey_refused"
    assert session.scalars(select(Passkey)).all() == []


# -- signing in without a password ---------------------------------------------------------


def test_a_passkey_signs_in_without_a_password_with_amr_hwk_mfa(
    session: Session, client: FlaskClient, clock: Clock, registered: SoftAuthenticator
) -> None:
    clock.advance(minutes=1)
    done = passwordless(client, registered)

    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.get_json() == {"redirect": "/account"}
    assert signed_in_as(client) == EMAIL
    assert live_session(session).amr == "hwk mfa"
    passkey = the_passkey(session)
    assert passkey.sign_count == 1
    assert passkey.last_used_at == clock.now


def test_a_synced_passkey_signs_in_with_amr_swk_mfa(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    synced = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID, backup_eligible=True, counts=False)
    make_user(app, session)
    assert sign_in(client).status_code == 303
    assert add_passkey(client, synced).status_code == 200
    assert passwordless(client, synced).status_code == 200
    assert passwordless(client, synced).status_code == 200  # counter 0 stays 0: fine
    assert live_session(session).amr == "swk mfa"
    assert the_passkey(session).backed_up is True


def test_a_challenge_works_once(
    session: Session, client: FlaskClient, registered: SoftAuthenticator
) -> None:
    csrf = csrf_of(client, "/login?prompt=login")
    options = post_json(client, "/login/passkey/options", {}, csrf).get_json()
    credential = registered.get_assertion(options)
    first = post_json(client, "/login/passkey", {"credential": credential}, csrf)
    assert first.status_code == 200
    client.post("/logout", data={"csrf_token": csrf_of(client, "/account")})
    csrf = csrf_of(client, "/login?prompt=login")
    again = post_json(client, "/login/passkey", {"credential": credential}, csrf)
    assert again.status_code == 400
    assert "already used" in again.get_json()["error_description"]
    assert signed_in_as(client) is None


def test_a_challenge_older_than_five_minutes_is_refused(
    client: FlaskClient, clock: Clock, registered: SoftAuthenticator
) -> None:
    csrf = csrf_of(client, "/login?prompt=login")
    options = post_json(client, "/login/passkey/options", {}, csrf).get_json()
    clock.advance(minutes=5, seconds=1)
    late = post_json(
        client, "/login/passkey", {"credential": registered.get_assertion(options)}, csrf
    )
    assert late.status_code == 400
    assert "took too long" in late.get_json()["error_description"]
    assert signed_in_as(client) is None


def test_a_registration_challenge_does_not_sign_in(
    app: Flask, session: Session, client: FlaskClient, registered: SoftAuthenticator
) -> None:
    assert passwordless(client, registered).status_code == 200
    csrf = csrf_of(client, "/account")
    options = post_json(client, "/account/passkeys/options", {}, csrf).get_json()
    client.post("/logout", data={"csrf_token": csrf})
    csrf = csrf_of(client, "/login?prompt=login")
    refused = post_json(
        client, "/login/passkey", {"credential": registered.get_assertion(options)}, csrf
    )
    assert refused.status_code == 400
    assert signed_in_as(client) is None


@pytest.mark.parametrize(
    "tampered", [{"origin": "https://evil.example"}, {"rp_id": "evil.example"}, {"verified": False}]
)
def test_an_assertion_for_another_origin_or_rp_id_or_without_verification_is_refused(
    session: Session, client: FlaskClient, registered: SoftAuthenticator, tampered: dict[str, Any]
) -> None:
    refused = passwordless(client, registered, **tampered)
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "passkey_refused"
    assert signed_in_as(client) is None
    failed = audit_events(session, "signin_failed")
    assert failed[-1].details["method"] == "passkey"


def test_a_removed_passkey_signs_nobody_in(
    session: Session, client: FlaskClient, clock: Clock, registered: SoftAuthenticator
) -> None:
    assert passwordless(client, registered).status_code == 200
    passkey = the_passkey(session)
    csrf = csrf_of(client, "/account")
    removed = client.post(f"/account/passkeys/{passkey.id}/remove", data={"csrf_token": csrf})
    assert removed.status_code == 303
    assert removed.headers["Location"] == "/account#passkeys"
    assert session.scalars(select(Passkey)).all() == []
    client.post("/logout", data={"csrf_token": csrf_of(client, "/account")})

    refused = passwordless(client, registered)
    assert refused.status_code == 400
    assert "not registered here" in refused.get_json()["error_description"]
    assert signed_in_as(client) is None


def test_a_counter_going_backwards_is_refused_audited_and_mailed_once(
    app: Flask,
    session: Session,
    client: FlaskClient,
    mailbox: Mailbox,
    registered: SoftAuthenticator,
) -> None:
    for _ in range(3):
        assert passwordless(client, registered).status_code == 200
    assert the_passkey(session).sign_count == 3
    deliver(app)
    mailbox.received.clear()

    for reported in (2, 3):  # behind, then equal: both a clone's
        cloned = passwordless(client, registered, sign_count=reported)
        assert cloned.status_code == 400
        assert "counter went backwards" in cloned.get_json()["error_description"]
    passkey = the_passkey(session)
    assert passkey.sign_count == 3
    assert passkey.clone_suspected_at is not None
    suspected = audit_events(session, "passkey_clone_suspected")
    assert [e.details["sign_count"] for e in suspected] == [2, 3]
    assert suspected[0].details["stored_sign_count"] == 3
    deliver(app)
    (notice,) = mailbox.received
    assert notice["Subject"] == "A passkey sign-in to authserver was refused"
    # The authenticator whose counter moves on still signs in; the account page warns.
    assert passwordless(client, registered).status_code == 200
    assert "it may have been copied" in client.get("/account").get_data(as_text=True)


def _passwordless_in(
    app: Flask, session: Session, credential: dict[str, Any]
) -> StartedSession | PasskeyRefused:
    rt = runtime(app)
    try:
        return sign_in_with_passkey(
            session,
            relying_party(rt.config),
            rt.throttle_policy,
            session_policy(rt.config),
            rt.notices,
            credential,
            context=RequestContext(ip_address="192.0.2.1", user_agent="test", now=rt.now()),
            is_trusted_device=lambda _email: False,
            previous=None,
        )
    except PasskeyRefused as refused:
        return refused


@pytest.mark.postgres_only
def test_an_authenticator_and_its_clone_at_the_same_moment_sign_in_once(
    committed_app: Flask, engine: Engine
) -> None:
    """Two answers with the same counter (a passkey and its copy, used at once): the first
    has moved the counter but not committed when the second is checked. The second waits on
    the passkey's row, then finds the counter no longer below its own: a clone, never two
    sign-ins on one counter value."""
    authenticator = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)
    http = committed_app.test_client()
    factory = db.state(committed_app).session_factory
    with factory() as setup:
        make_user(committed_app, setup)
    assert sign_in(http).status_code == 303
    assert add_passkey(http, authenticator).status_code == 200
    rt = runtime(committed_app)
    with factory() as setup:
        options = [json.loads(sign_in_options(setup, relying_party(rt.config), rt.now()))]
        options.append(json.loads(sign_in_options(setup, relying_party(rt.config), rt.now())))
        setup.commit()
    answers = [authenticator.get_assertion(each, sign_count=5) for each in options]

    first, racing = factory(), factory()
    try:
        assert isinstance(_passwordless_in(committed_app, first, answers[0]), StartedSession)
        outcome: list[object] = []
        thread = threading.Thread(
            target=lambda: outcome.append(_passwordless_in(committed_app, racing, answers[1]))
        )
        thread.start()
        wait_until(lambda: waiting_on_a_lock(engine), "the second answer to wait on a lock")
        first.commit()
        thread.join(timeout=HANG_SECONDS)
        assert not thread.is_alive()
        racing.commit()
    finally:
        first.close()
        racing.close()

    (lost,) = outcome
    assert isinstance(lost, PasskeyCloneSuspected)
    with factory() as check:
        passkey = check.scalars(select(Passkey)).one()
        assert passkey.sign_count == 5
        assert passkey.clone_suspected_at is not None
        started = check.scalars(select(BrowserSession).where(BrowserSession.amr == "hwk mfa"))
        assert len(list(started)) == 1


def test_refused_passkeys_are_throttled_per_address(
    client: FlaskClient, registered: SoftAuthenticator
) -> None:
    for _ in range(6):
        assert passwordless(client, registered, origin="https://evil.example").status_code == 400
    throttled = passwordless(client, registered)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert signed_in_as(client) is None


def test_malformed_bodies_are_refused_as_json_never_a_500(
    client: FlaskClient, registered: SoftAuthenticator
) -> None:
    csrf = csrf_of(client, "/login?prompt=login")
    for body in (
        b"not json",
        b"[]",
        b'{"credential": 5}',
        b'{"credential": {"id": "x"}}',
        json.dumps(
            {
                "credential": {
                    "id": "AA",
                    "rawId": "AA",
                    "type": "public-key",
                    "response": {"clientDataJSON": "!!", "authenticatorData": "", "signature": ""},
                }
            }
        ).encode(),
    ):
        answer = client.post(
            "/login/passkey",
            data=body,
            content_type="application/json",
            headers={"X-CSRFToken": csrf},
        )
        assert answer.status_code == 400, body
        assert answer.get_json()["error"] == "passkey_refused"


def test_a_json_post_without_the_csrf_token_or_from_another_site_is_refused(
    session: Session, client: FlaskClient, registered: SoftAuthenticator
) -> None:
    csrf = csrf_of(client, "/login?prompt=login")
    options = post_json(client, "/login/passkey/options", {}, csrf).get_json()
    credential = {"credential": registered.get_assertion(options)}
    no_token = client.post(
        "/login/passkey", data=json.dumps(credential), content_type="application/json"
    )
    assert no_token.status_code == 400
    cross_site = client.post(
        "/login/passkey",
        data=json.dumps(credential),
        content_type="application/json",
        headers={"X-CSRFToken": csrf, "Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert signed_in_as(client) is None
    assert the_passkey(session).sign_count == 0


# -- the second step after the password ----------------------------------------------------


def second_step(http: FlaskClient, authenticator: SoftAuthenticator, **kwargs: Any) -> TestResponse:
    page = http.get("/login/second-factor", query_string={"next": "/account"})
    assert page.status_code == 200, page.headers.get("Location")
    assert "Use a passkey" in page.get_data(as_text=True)
    csrf = csrf_token_of(page)
    options = post_json(http, "/login/second-factor/passkey/options", {}, csrf)
    assert options.status_code == 200, options.get_data(as_text=True)
    credential = authenticator.get_assertion(options.get_json(), **kwargs)
    return post_json(
        http, "/login/second-factor/passkey", {"credential": credential, "next": "/account"}, csrf
    )


def test_after_the_password_a_passkey_is_the_second_step_with_amr_pwd_hwk_mfa(
    session: Session, client: FlaskClient, registered: SoftAuthenticator
) -> None:
    password = sign_in(client)
    assert password.headers["Location"].startswith("/login/second-factor")
    assert signed_in_as(client) is None

    done = second_step(client, registered)
    assert done.status_code == 200, done.get_data(as_text=True)
    assert signed_in_as(client) == EMAIL
    assert live_session(session).amr == "pwd hwk mfa"
    # The half-done sign-in is used up.
    again = client.post(
        "/login/second-factor/passkey/options", headers={"X-CSRFToken": csrf_of(client, "/account")}
    )
    assert again.status_code == 401


def test_another_accounts_passkey_is_refused_at_the_second_step(
    app: Flask,
    session: Session,
    client: FlaskClient,
    clock: Clock,
    registered: SoftAuthenticator,
) -> None:
    bob_http = app.test_client()
    make_user(app, session, "bob@example.com")
    assert sign_in(bob_http, "bob@example.com").status_code == 303
    bobs = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)
    assert add_passkey(bob_http, bobs).status_code == 200

    assert sign_in(client).status_code == 303  # Ann's password
    refused = second_step(client, bobs)
    assert refused.status_code == 400
    assert signed_in_as(client) is None
    assert audit_events(session, "second_factor_failed")[-1].details["method"] == "passkey"
    assert second_step(client, registered).status_code == 200  # still usable, with hers


# -- the account page ----------------------------------------------------------------------


def test_renaming_and_removing_need_a_recent_sign_in(
    session: Session, client: FlaskClient, clock: Clock, registered: SoftAuthenticator
) -> None:
    assert passwordless(client, registered).status_code == 200
    passkey = the_passkey(session)
    clock.advance(minutes=5, seconds=1)
    csrf = csrf_of(client, "/account")
    rename = client.post(
        f"/account/passkeys/{passkey.id}/rename", data={"csrf_token": csrf, "name": "Phone"}
    )
    remove = client.post(f"/account/passkeys/{passkey.id}/remove", data={"csrf_token": csrf})
    options = post_json(client, "/account/passkeys/options", {}, csrf)
    for answer in (rename, remove):
        assert answer.status_code == 303
        assert "prompt=login" in answer.headers["Location"]
    assert options.status_code == 401
    assert "prompt=login" in options.get_json()["redirect"]
    assert the_passkey(session).name == "Laptop"

    assert passwordless(client, registered).status_code == 200
    csrf = csrf_of(client, "/account")
    client.post(
        f"/account/passkeys/{passkey.id}/rename", data={"csrf_token": csrf, "name": "  My\nphone  "}
    )
    assert the_passkey(session).name == "My phone"
    assert "My phone" in client.get("/account").get_data(as_text=True)


def test_another_accounts_passkey_cannot_be_renamed_or_removed(
    app: Flask, session: Session, client: FlaskClient, registered: SoftAuthenticator
) -> None:
    passkey = the_passkey(session)
    bob_http = app.test_client()
    make_user(app, session, "bob@example.com")
    assert sign_in(bob_http, "bob@example.com").status_code == 303
    csrf = csrf_of(bob_http, "/account")
    bob_http.post(f"/account/passkeys/{passkey.id}/rename", data={"csrf_token": csrf, "name": "x"})
    bob_http.post(f"/account/passkeys/{passkey.id}/remove", data={"csrf_token": csrf})
    assert the_passkey(session).name == "Laptop"


def test_the_operators_reset_removes_passkeys(
    app: Flask, session: Session, registered: SoftAuthenticator
) -> None:
    user = find_user_by_email(session, EMAIL)
    assert user is not None
    assert reset_second_factors(session, runtime(app).notices, user, runtime(app).now())
    assert session.scalars(select(Passkey)).all() == []
    assert audit_events(session, "passkey_removed")[-1].details["method"] == "operator"


def test_used_challenges_leave_no_row(
    session: Session, client: FlaskClient, registered: SoftAuthenticator
) -> None:
    assert passwordless(client, registered).status_code == 200
    session.expire_all()
    assert session.scalars(select(PasskeyChallenge)).all() == []


def test_a_credential_id_already_registered_is_refused(
    app: Flask, session: Session, clock: Clock, registered: SoftAuthenticator
) -> None:
    bob_http = app.test_client()
    make_user(app, session, "bob@example.com")
    assert sign_in(bob_http, "bob@example.com").status_code == 303
    same_id = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID, credential_id=registered.credential_id)

    refused = add_passkey(bob_http, same_id)

    assert refused.status_code == 400
    assert "already registered" in refused.get_json()["error_description"]
    assert the_passkey(session).name == "Laptop"  # still Ann's, the only one


# -- how strongly: acr and amr in the tokens, and a step-up ---------------------------------


@pytest.fixture
def rp(session: Session) -> RegisteredClient:
    return web_client(session)


def test_a_passwordless_sign_in_is_the_mfa_class_with_amr_hwk_mfa_in_the_id_token(
    client: FlaskClient, rp: RegisteredClient, registered: SoftAuthenticator
) -> None:
    assert passwordless(client, registered).status_code == 200

    tokens = tokens_from(client, rp, *authorize(client, rp))

    id_token = claims_of(tokens["id_token"])
    assert id_token["acr"] == MFA_ACR
    assert id_token["amr"] == ["hwk", "mfa"]


def test_acr_values_mfa_steps_a_password_session_up_with_a_passkey(
    app: Flask,
    session: Session,
    client: FlaskClient,
    clock: Clock,
    rp: RegisteredClient,
    authenticator: SoftAuthenticator,
) -> None:
    make_user(app, session)
    older = app.test_client()  # signed in with the password before the passkey was added
    assert sign_in(older).status_code == 303
    assert sign_in(client).status_code == 303
    assert add_passkey(client, authenticator).status_code == 200
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, acr_values=MFA_ACR)

    to_second_step = older.get(url)
    assert to_second_step.headers["Location"].startswith("/login/second-factor")
    page = older.get(to_second_step.headers["Location"])
    assert "Use a passkey" in page.get_data(as_text=True)
    csrf = csrf_token_of(page)
    options = post_json(older, "/login/second-factor/passkey/options", {}, csrf).get_json()
    next_path = query_of(to_second_step.headers["Location"])["next"]
    done = post_json(
        older,
        "/login/second-factor/passkey",
        {"credential": authenticator.get_assertion(options), "next": next_path},
        csrf,
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    back = done.get_json()["redirect"]
    assert back.startswith("/oauth/authorize?")

    tokens = tokens_from(older, rp, follow_to_client(older, older.get(back)), verifier)
    id_token = claims_of(tokens["id_token"])
    assert id_token["acr"] == MFA_ACR
    assert id_token["amr"] == ["pwd", "hwk", "mfa"]


def test_a_session_without_the_second_factor_is_asked_for_it_before_changing_passkeys(
    app: Flask,
    session: Session,
    client: FlaskClient,
    clock: Clock,
    authenticator: SoftAuthenticator,
) -> None:
    make_user(app, session)
    older = app.test_client()  # signed in with the password before the passkey was added
    assert sign_in(older).status_code == 303
    assert sign_in(client).status_code == 303
    assert add_passkey(client, authenticator).status_code == 200
    passkey = the_passkey(session)
    csrf = csrf_of(older, "/account")

    rename = older.post(
        f"/account/passkeys/{passkey.id}/rename", data={"csrf_token": csrf, "name": "Mine now"}
    )
    remove = older.post(f"/account/passkeys/{passkey.id}/remove", data={"csrf_token": csrf})
    options = post_json(older, "/account/passkeys/options", {}, csrf)

    for answer in (rename, remove):
        assert answer.status_code == 303
        assert answer.headers["Location"].startswith("/login/second-factor")
    assert options.status_code == 401
    assert options.get_json()["error"] == "second_factor_required"
    assert options.get_json()["redirect"].startswith("/login/second-factor")
    assert the_passkey(session).name == "Laptop"
    # The passkey given on the code's page makes a session that may change them.
    assert second_step(older, authenticator).status_code == 200
    csrf = csrf_of(older, "/account")
    older.post(
        f"/account/passkeys/{passkey.id}/rename", data={"csrf_token": csrf, "name": "Mine now"}
    )
    assert the_passkey(session).name == "Mine now"
