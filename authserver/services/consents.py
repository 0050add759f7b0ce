"""Remembered consent: a user approves a client's scopes once, not at every sign-in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.models import Client, Consent, User


def consent_needed(db: Session, user: User, client: Client, scope: str) -> bool:
    """First-party clients belong to the operator: their consent is implied."""
    if client.is_first_party:
        return False
    consent = db.scalars(
        select(Consent).where(Consent.user_id == user.id, Consent.client_pk == client.id)
    ).one_or_none()
    return consent is None or not set(scope.split()) <= set(consent.scopes)


def remember_consent(db: Session, user: User, client: Client, scope: str, now: datetime) -> None:
    consent = db.scalars(
        select(Consent).where(Consent.user_id == user.id, Consent.client_pk == client.id)
    ).one_or_none()
    if consent is None:
        db.add(Consent(user_id=user.id, client_pk=client.id, scopes=scope.split(), granted_at=now))
    else:
        consent.scopes = sorted(set(consent.scopes) | set(scope.split()))
        consent.granted_at = now
    db.flush()
