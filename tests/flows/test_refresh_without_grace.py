"""With AUTHSERVER_REFRESH_REUSE_GRACE=0 every second use of a refresh token is theft."""

from __future__ import annotations

from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.config import Config
from authserver.models import RefreshFamily
from tests.helpers import make_client, make_user, password_login, refresh


@pytest.fixture
def config(config: Config) -> Config:
    return replace(config, refresh_reuse_grace=0)


def test_immediate_retry_revokes_family_when_grace_window_is_off(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    first = password_login(client, registered).json["refresh_token"]
    second = refresh(client, registered, first).json["refresh_token"]

    retry = refresh(client, registered, first)

    assert retry.status_code == 400
    assert retry.json["error"] == "invalid_grant"
    assert refresh(client, registered, second).json["error"] == "invalid_grant"
    assert session.scalars(select(RefreshFamily.revoked_reason)).one() == "reuse_detected"
