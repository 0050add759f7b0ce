"""Demo data for `make run`: a user, a first-party app and a third-party web app.

Development only (the CLI refuses it in production). The secrets are returned so the CLI can
keep them in a 0600 file: the database holds only digests and could not show them again.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from authserver.services import clients as client_service
from authserver.services import users as user_service
from authserver.services.password_policy import PasswordPolicy
from authserver.services.passwords import PasswordHasher

DEMO_EMAIL = "demo@example.com"
# Where examples/relying_party.py listens.
DEMO_RP_BASE = "http://127.0.0.1:8765"
DEMO_RP_REDIRECT_URI = DEMO_RP_BASE + "/callback"


def seed_demo(
    session: Session,
    hasher: PasswordHasher,
    password_policy: PasswordPolicy,
    known: dict[str, Any],
    now: datetime,
    *,
    api_audience: str,
) -> dict[str, Any]:
    """Create whatever of the demo is missing; returns the credentials, old and new.

    ``api_audience`` is what the demo apps' tokens carry in ``aud`` (with no audience
    configured, the issuer): the demo API serves it, so it may introspect them and follow
    the revocation feed (examples/resource_server.py)."""
    credentials = dict(known)
    if user_service.find_user_by_email(session, DEMO_EMAIL) is None:
        # 96 random bits: zxcvbn scores such a password 4 whatever the policy's minimum.
        password = secrets.token_urlsafe(12)
        user_service.create_user(
            session, hasher, DEMO_EMAIL, password, password_policy=password_policy
        )
        credentials.update(email=DEMO_EMAIL, password=password)
        app = client_service.create_client(
            session,
            name="Demo app",
            grant_types=["password", "refresh_token", "client_credentials"],
            first_party=True,
            scopes=["read", "write"],
        )
        credentials.update(client_id=app.client.client_id, client_secret=app.client_secret)
    if "web_client_id" not in credentials:
        web = client_service.create_client(
            session,
            name="Demo web app",
            grant_types=["authorization_code", "refresh_token"],
            public=True,
            redirect_uris=[DEMO_RP_REDIRECT_URI],
            post_logout_redirect_uris=[DEMO_RP_BASE + "/"],
            scopes=["openid", "email", "profile", "offline_access"],
            # Signing out at authserver signs the user out of the example app too.
            backchannel_logout_uri=DEMO_RP_BASE + "/backchannel-logout",
        )
        verifier = secrets.token_urlsafe(48)
        credentials.update(web_client_id=web.client.client_id, pkce_verifier=verifier)
    if "api_client_id" not in credentials:
        api = client_service.create_client(
            session,
            name="Demo API",
            grant_types=["client_credentials"],
            served_audiences=[api_audience],
        )
        credentials.update(api_client_id=api.client.client_id, api_client_secret=api.client_secret)
    return credentials


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
