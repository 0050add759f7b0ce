"""A small web app that signs its users in through authserver (a "relying party").

It shows the whole browser flow a real app performs: authorization code with PKCE and a
nonce, the token exchange, ID token verification against the JWKS, a refresh, RP-initiated
logout, and back-channel logout: when the user signs out at authserver (or anywhere else that
ends the browser session), authserver POSTs a logout token to ``/backchannel-logout`` and
this app ends its own session for it. Run `make run` in one terminal, then:

    .venv/bin/python examples/relying_party.py

and open http://127.0.0.1:8765. It signs in at http://127.0.0.1:8000; when `make run` serves
elsewhere (`make run PORT=8123`), say where with AUTHSERVER_ISSUER=http://127.0.0.1:8123.
It uses the public "Demo web app" client that `make run`
registers (its client_id is read from instance/demo-credentials.json, or RP_CLIENT_ID), with
http://127.0.0.1:8765/backchannel-logout as its back-channel logout URI; a database seeded
before that existed gets it with
`authserver clients backchannel-logout CLIENT_ID http://127.0.0.1:8765/backchannel-logout`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, redirect, render_template_string, request, session
from joserfc import jwt
from joserfc.jwk import KeySet

RP_HOST = "127.0.0.1"
RP_PORT = 8765
# Where authserver sends logout tokens: register it as the client's backchannel_logout_uri.
BACKCHANNEL_LOGOUT_PATH = "/backchannel-logout"
# OpenID Connect Back-Channel Logout 1.0 §2.4: what makes a JWT a logout token.
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPE = "logout+jwt"  # noqa: S105 (a media type, not a secret)
# How far the two clocks may disagree, and how old a logout token may be when it arrives
# (authserver signs it at each delivery attempt, so a fresh one is always on its way).
CLOCK_SKEW_SECONDS = 60
LOGOUT_TOKEN_MAX_AGE_SECONDS = 300


APP_NAME = "Notes"
# The app's pages: one layout, its own small stylesheet, light and dark. Flask escapes every
# value put into a template rendered from a string.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · {{ app_name }}</title>
<style>
  :root { color-scheme: light dark; --accent: #0b6e4f; --line: #d0d7de; --soft: #f4f7f6;
    --bg: #ffffff; --fg: #1b1f23; }
  @media (prefers-color-scheme: dark) { :root { --accent: #5fd3a6; --line: #3a4048;
    --soft: #1c2126; --bg: #121417; --fg: #e8eaed; } }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
    background: var(--bg); color: var(--fg); }
  header { display: flex; align-items: center; justify-content: space-between; gap: 1rem;
    flex-wrap: wrap; padding: .75rem 1.25rem; border-bottom: 1px solid var(--line); }
  .logo { font-weight: 700; font-size: 1.2rem; text-decoration: none; color: inherit; }
  .logo span { color: var(--accent); }
  .user { display: flex; align-items: center; gap: .6rem; flex-wrap: wrap; }
  .avatar { width: 2rem; height: 2rem; border-radius: 50%; background: var(--accent);
    color: var(--bg); display: grid; place-items: center; font-weight: 700; }
  main { max-width: 40rem; margin: 2.5rem auto; padding: 0 1.25rem; }
  h1 { font-size: 1.6rem; margin: 0 0 .75rem; }
  .card { border: 1px solid var(--line); border-radius: .6rem; padding: 1rem 1.25rem;
    background: var(--soft); margin: 1rem 0; }
  .button, button { display: inline-block; font: inherit; padding: .55rem 1.1rem;
    border-radius: .4rem; border: 1px solid var(--accent); background: var(--accent);
    color: var(--bg); text-decoration: none; cursor: pointer; }
  .button.quiet, button.quiet { background: transparent; color: var(--accent); }
  .actions { display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
  a { color: var(--accent); }
  .muted { opacity: .8; }
</style>
</head>
<body>
<header>
  <a class="logo" href="/"><span>&#9998;</span> {{ app_name }}</a>
  {% if user %}
  <div class="user">
    <span class="avatar" aria-hidden="true">{{ user[:1] | upper }}</span>
    <span>{{ user }}</span>
    <a id="sign-out" class="button quiet" href="/logout">Sign out</a>
  </div>
  {% endif %}
</header>
<main>
{% if page == "welcome" %}
  <h1>Your notes, on every device</h1>
  <p>{{ app_name }} is an example app: it signs you in through authserver with OpenID Connect.</p>
  <p><a id="sign-in" class="button" href="/login">Sign in</a></p>
{% elif page == "home" %}
  <h1>Hello, {{ name }}</h1>
  <p id="who">Signed in as {{ user }}</p>
  <div class="card">
    <p id="refreshes">Refreshes: {{ refreshes }}</p>
    <form method="post" action="/refresh" class="actions">
      <button id="refresh" class="quiet">Refresh the tokens</button>
      <span class="muted">Trades the refresh token for a new one, as an app does quietly.</span>
    </form>
  </div>
{% else %}
  <h1>{{ title }}</h1>
  <p id="problem">{{ message }}</p>
  <p class="actions">
    <a id="start-again" class="button" href="/login">Start again</a>
    <a class="button quiet" href="/">Back to {{ app_name }}</a>
  </p>
{% endif %}
</main>
</body>
</html>
"""


def _page(page: str, title: str, **values: Any) -> str:
    claims = session.get("claims") or {}
    user = claims.get("email") or claims.get("sub")
    return render_template_string(
        PAGE, page=page, title=title, app_name=APP_NAME, user=user, **values
    )


def _problem(title: str, message: str, status: int = 400) -> tuple[str, int]:
    """A friendly page for a sign-in that did not finish, with a way to start again."""
    return _page("problem", title, message=message), status


def _http_json(url: str, form: dict[str, str] | None = None) -> dict[str, Any]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as response:  # noqa: S310
            result: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        result = json.load(exc)
    return result


class InvalidLogoutToken(Exception):
    """A logout token that fails one of the checks of Back-Channel Logout §2.6."""


class EndedSessions:
    """What the back-channel has said, kept where every request of this app can see it.

    This app's sessions live in signed cookies, which a request from authserver cannot
    clear; so it remembers which sessions ended (``sid``), which users were signed out
    everywhere (``sub``, at a time) and which logout tokens it has acted on (``jti``), and
    each request of a browser checks its session against that. In memory, so for one
    process; a real app keeps this where its sessions are (its database, Redis).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sids: set[str] = set()
        self._users: dict[str, float] = {}  # sub -> sessions begun before this time ended
        self._jtis: dict[str, float] = {}  # jti -> when it may be forgotten

    def first_time(self, jti: str, until: float, now: float) -> bool:
        """Whether this logout token's ``jti`` is new (§2.6: optionally detect replays);
        remembered until ``until``, past which the token is refused as expired anyway."""
        with self._lock:
            self._jtis = {seen: end for seen, end in self._jtis.items() if end > now}
            if jti in self._jtis:
                return False
            self._jtis[jti] = until
            return True

    def end(self, sid: str | None, sub: str | None, now: float) -> None:
        """§2.7: a sid ends that session; a sub alone ends every session of that user."""
        with self._lock:
            if sid is not None:
                self._sids.add(sid)
            elif sub is not None:
                self._users[sub] = now

    def has_ended(self, claims: dict[str, Any], signed_in_at: float) -> bool:
        with self._lock:
            if claims.get("sid") in self._sids:
                return True
            cutoff = self._users.get(str(claims.get("sub")))
            return cutoff is not None and signed_in_at <= cutoff


def create_rp_app(issuer: str, client_id: str, base_url: str) -> Flask:
    """The relying party for ``client_id``, served at ``base_url``."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secrets.token_hex(32), SESSION_COOKIE_NAME="rp_session")
    redirect_uri = base_url + "/callback"
    metadata = _http_json(issuer + "/.well-known/openid-configuration")
    ended = EndedSessions()
    app.extensions["ended_sessions"] = ended

    def verify_id_token(id_token: str, nonce: str | None) -> dict[str, Any]:
        keys = KeySet.import_key_set(_http_json(metadata["jwks_uri"]))
        token = jwt.decode(
            id_token, keys, algorithms=metadata["id_token_signing_alg_values_supported"]
        )
        if str(token.header.get("typ", "JWT")).lower() != "jwt":
            # A logout token (logout+jwt) or an access token (at+jwt) is not an ID token.
            raise ValueError("not an ID token")
        claims = token.claims
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id},
            exp={"essential": True},
        ).validate(claims)
        if nonce is not None and claims.get("nonce") != nonce:
            raise ValueError("nonce mismatch")
        return dict(claims)

    def verify_logout_token(logout_token: str) -> dict[str, Any]:
        """Back-Channel Logout §2.6, every step, then the claims; else InvalidLogoutToken."""
        # Not reaching the keys is this app's trouble, not the token's: the caller gets a 5xx
        # and authserver tries again later.
        keys = KeySet.import_key_set(_http_json(metadata["jwks_uri"]))
        try:
            # The keys and algorithms of ID tokens (§2.4); the signature is checked here.
            token = jwt.decode(
                logout_token, keys, algorithms=metadata["id_token_signing_alg_values_supported"]
            )
        except Exception as exc:
            # Anyone may POST anything here: whatever the JOSE library makes of it is a 400.
            reason = f"not a token signed by the issuer ({type(exc).__name__})"
            raise InvalidLogoutToken(reason) from None
        # §2.4, §4.1: explicitly typed, so that no ID token or access token passes for one.
        if str(token.header.get("typ", "")).lower() != LOGOUT_TOKEN_TYPE:
            raise InvalidLogoutToken("not typed logout+jwt")
        claims = dict(token.claims)
        now = time.time()
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        issued_at, expires_at = claims.get("iat"), claims.get("exp")
        events = claims.get("events")
        checks = (
            (claims.get("iss") == issuer, "wrong issuer"),
            (client_id in audiences, "not meant for this client"),
            (
                isinstance(issued_at, int | float)
                and now - LOGOUT_TOKEN_MAX_AGE_SECONDS <= issued_at <= now + CLOCK_SKEW_SECONDS,
                "issued too long ago or in the future",
            ),
            (
                isinstance(expires_at, int | float) and expires_at > now - CLOCK_SKEW_SECONDS,
                "expired",
            ),
            (
                isinstance(events, dict) and isinstance(events.get(LOGOUT_EVENT), dict),
                "no back-channel logout event",
            ),
            # A nonce would let it pass for an ID token in a forged sign-in (§2.4).
            ("nonce" not in claims, "carries a nonce"),
            (
                isinstance(claims.get("sid"), str) or isinstance(claims.get("sub"), str),
                "names neither a session nor a user",
            ),
            (isinstance(claims.get("jti"), str), "no jti"),
        )
        for passed, reason in checks:
            if not passed:
                raise InvalidLogoutToken(reason)
        return claims

    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"  # §2.8
        return response

    @app.before_request
    def drop_ended_session() -> None:
        claims = session.get("claims")
        if claims and ended.has_ended(claims, session.get("signed_in_at", 0.0)):
            session.clear()

    @app.post(BACKCHANNEL_LOGOUT_PATH)
    def backchannel_logout() -> Response | tuple[Response, int]:
        """§2.5-§2.8: verify the logout token, end the sessions it names, answer 200; 400
        with an error for a token that fails a check."""
        try:
            claims = verify_logout_token(request.form.get("logout_token", ""))
        except InvalidLogoutToken as refused:
            body = jsonify(error="invalid_request", error_description=str(refused))
            return no_store(body), 400
        now = time.time()
        # A jti seen before is a logout already acted on (authserver retries a delivery whose
        # answer it lost, with the same jti) or a replay: either way nothing is done again,
        # and the answer says it is done, so the sender stops.
        if ended.first_time(claims["jti"], claims["exp"] + CLOCK_SKEW_SECONDS, now):
            ended.end(claims.get("sid"), claims.get("sub"), now)
        return no_store(Response(status=200))

    @app.before_request
    def one_host_name() -> Any:
        """The sign-in comes back to ``base_url``: a browser that opened the app under another
        name (localhost for 127.0.0.1) would not send back the cookie holding ``state``, and
        the sign-in would fail. So the app is only ever used under ``base_url``'s name."""
        canonical = urllib.parse.urlsplit(base_url).netloc
        if request.host != canonical and request.method == "GET":
            return redirect(base_url + request.full_path.rstrip("?"))
        return None

    @app.get("/")
    def home() -> str:
        claims = session.get("claims")
        if not claims:
            return _page("welcome", "Welcome")
        user = claims.get("email", claims["sub"])
        return _page(
            "home",
            "Home",
            name=claims.get("name") or str(user).split("@")[0],
            refreshes=session.get("refreshes", 0),
        )

    @app.get("/login")
    def login() -> Any:
        verifier = secrets.token_urlsafe(48)
        session.update(
            state=secrets.token_urlsafe(16),
            nonce=secrets.token_urlsafe(16),
            verifier=verifier,
        )
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid email offline_access",
                "state": session["state"],
                "nonce": session["nonce"],
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
        return redirect(metadata["authorization_endpoint"] + "?" + query)

    @app.get("/callback")
    def callback() -> Any:
        expected_state = session.pop("state", None)
        if expected_state is None or request.args.get("state") != expected_state:
            # The answer is not to a sign-in this browser started here (CSRF, RFC 6749
            # §10.12), or to one already finished: nothing in it is used.
            return _problem(
                "This sign-in has expired",
                "This sign-in was not started here, or was already finished (after going "
                "back, reloading, or a restart of the app). Start again to sign in.",
            )
        if request.args.get("iss") != issuer:  # RFC 9207
            return _problem(
                "Sign-in not finished",
                "The answer did not come from the sign-in service this app uses. Start again.",
            )
        if "code" not in request.args:
            if request.args.get("error") == "access_denied":
                return _problem(
                    "You did not allow access",
                    f"{APP_NAME} needs your permission to sign you in. Start again if you "
                    "change your mind.",
                    403,
                )
            return _problem(
                "Sign-in not finished",
                f"The sign-in service said: {request.args.get('error', 'unknown error')}. "
                "Start again.",
            )
        tokens = _http_json(
            metadata["token_endpoint"],
            {
                "grant_type": "authorization_code",
                "code": request.args["code"],
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": session.pop("verifier", ""),
            },
        )
        if "id_token" not in tokens:
            return _problem(
                "Sign-in not finished",
                f"The sign-in could not be completed ({tokens.get('error', 'no tokens')}). "
                "Start again.",
            )
        claims = verify_id_token(tokens["id_token"], session.pop("nonce", None))
        userinfo_request = urllib.request.Request(  # noqa: S310
            metadata["userinfo_endpoint"],
            headers={"Authorization": "Bearer " + tokens["access_token"]},
        )
        with urllib.request.urlopen(userinfo_request, timeout=10) as response:  # noqa: S310
            claims.update(json.load(response))
        session.update(
            claims=claims,
            signed_in_at=time.time(),
            id_token=tokens["id_token"],
            refresh_token=tokens.get("refresh_token"),
            refreshes=0,
        )
        return redirect("/")

    @app.post("/refresh")
    def refresh() -> Any:
        tokens = _http_json(
            metadata["token_endpoint"],
            {
                "grant_type": "refresh_token",
                "refresh_token": session.get("refresh_token") or "",
                "client_id": client_id,
            },
        )
        if "refresh_token" not in tokens:
            session.clear()
            return _problem(
                "You were signed out",
                "Your sign-in ended (you signed out elsewhere, or it expired). Sign in again.",
                401,
            )
        session["refresh_token"] = tokens["refresh_token"]
        session["refreshes"] = session.get("refreshes", 0) + 1
        return redirect("/")

    @app.get("/logout")
    def logout() -> Any:
        id_token = session.get("id_token", "")
        session.clear()
        query = urllib.parse.urlencode(
            {"id_token_hint": id_token, "post_logout_redirect_uri": base_url + "/"}
        )
        return redirect(metadata["end_session_endpoint"] + "?" + query)

    return app


def _demo_client_id() -> str:
    if os.environ.get("RP_CLIENT_ID"):
        return os.environ["RP_CLIENT_ID"]
    instance = Path(os.environ.get("AUTHSERVER_INSTANCE_DIR", "instance"))
    try:
        credentials = json.loads((instance / "demo-credentials.json").read_text())
    except FileNotFoundError:
        raise SystemExit(
            f"{instance / 'demo-credentials.json'} is missing: run `make run` first, from the "
            "repository's folder (or set RP_CLIENT_ID)"
        ) from None
    return str(credentials["web_client_id"])


if __name__ == "__main__":
    issuer = os.environ.get("AUTHSERVER_ISSUER", "http://127.0.0.1:8000")
    base = f"http://{RP_HOST}:{RP_PORT}"
    client_id = _demo_client_id()
    try:
        rp_app = create_rp_app(issuer, client_id, base)
    except (OSError, ValueError) as exc:  # refused, timed out, not JSON
        raise SystemExit(
            f"authserver does not answer at {issuer} ({exc}): start it with `make run` and "
            'wait for its "Running on" line; when it serves elsewhere, set AUTHSERVER_ISSUER'
        ) from None
    rp_app.run(RP_HOST, RP_PORT)
