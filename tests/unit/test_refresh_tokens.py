"""Refresh-token families at the service level, with explicit clocks.

The HTTP behaviour (rotation, reuse detection, the grace window) is in
tests/flows/test_refresh_rotation.py; these tests pin the times and the stored values exactly.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.errors import InvalidGrant, InvalidScope, RefreshTokenReused
from authserver.models import Client, RefreshFamily, RefreshToken, User
from authserver.services.refresh_tokens import (
    IssuedRefreshToken,
    NewFamily,
    RefreshPolicy,
    RevocationReason,
    digest_token,
    revoke_family,
    revoke_user_families,
    rotate_refresh_token,
    start_family,
)
from tests.helpers import make_client, make_user

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=15)
POLICY = RefreshPolicy(
    idle_ttl=timedelta(hours=1), absolute_ttl=timedelta(days=1), reuse_grace=GRACE
)
# ``<family id>.<secret>``: a UUID's 16 bytes and 256 random bits, each base64url unpadded.
FAMILY_AND_256_BITS = re.compile(r"^([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$")


@pytest.fixture
def user(app: Flask, session: Session) -> User:
    return make_user(app, session)


@pytest.fixture
def oauth_client(session: Session) -> Client:
    return make_client(session).client


def start(
    session: Session, user: User, client: Client, policy: RefreshPolicy = POLICY
) -> IssuedRefreshToken:
    return start_family(
        session,
        user=user,
        client=client,
        scope="read write",
        audience="https://api.example.test",
        policy=policy,
        now=NOW,
    )


def rotate(session: Session, client: Client, presented: str, now: datetime) -> IssuedRefreshToken:
    return rotate_refresh_token(
        session,
        presented=presented,
        client=client,
        requested_scope=None,
        policy=POLICY,
        now=now,
    )


def _family(session: Session, issued: IssuedRefreshToken | NewFamily) -> RefreshFamily:
    session.expire_all()
    return session.scalars(select(RefreshFamily).where(RefreshFamily.id == issued.family_id)).one()


def _token_row(session: Session, token: str) -> RefreshToken:
    session.expire_all()
    return session.scalars(
        select(RefreshToken).where(RefreshToken.token_digest == digest_token(token))
    ).one()


# -- starting a family -----------------------------------------------------------------------


def test_start_family_expires_after_the_absolute_ttl(
    session: Session, user: User, oauth_client: Client
) -> None:
    issued = start(session, user, oauth_client)

    assert _family(session, issued).expires_at == NOW + timedelta(days=1)


def test_start_family_idle_expiry_is_now_plus_idle_ttl(
    session: Session, user: User, oauth_client: Client
) -> None:
    issued = start(session, user, oauth_client)

    family = _family(session, issued)
    assert family.idle_expires_at == NOW + timedelta(hours=1)
    assert _token_row(session, issued.token).expires_at == NOW + timedelta(hours=1)


def test_start_family_idle_expiry_never_passes_the_absolute_expiry(
    session: Session, user: User, oauth_client: Client
) -> None:
    policy = RefreshPolicy(
        idle_ttl=timedelta(days=2), absolute_ttl=timedelta(days=1), reuse_grace=GRACE
    )

    issued = start(session, user, oauth_client, policy)

    family = _family(session, issued)
    assert family.idle_expires_at == family.expires_at == NOW + timedelta(days=1)


def test_refresh_tokens_name_their_family_and_carry_256_random_bits(
    session: Session, user: User, oauth_client: Client
) -> None:
    issued = start(session, user, oauth_client)
    second = rotate(session, oauth_client, issued.token, NOW + timedelta(minutes=1)).token

    for token in (issued.token, second):
        shape = FAMILY_AND_256_BITS.match(token)
        assert shape is not None, token
        assert base64.urlsafe_b64decode(shape[1] + "==") == issued.family_id.bytes
        assert len(base64.urlsafe_b64decode(shape[2] + "=")) == 32
    assert _token_row(session, issued.token).token_digest == digest_token(issued.token)


# -- rotation with explicit times ------------------------------------------------------------


def test_rotation_stamps_use_and_slides_idle_expiry_from_the_time_of_use(
    session: Session, user: User, oauth_client: Client
) -> None:
    first = start(session, user, oauth_client)
    used_at = NOW + timedelta(minutes=50)

    second = rotate(session, oauth_client, first.token, used_at)

    assert _token_row(session, first.token).used_at == used_at
    successor = _token_row(session, second.token)
    assert successor.generation == 1
    assert successor.expires_at == used_at + timedelta(hours=1)
    family = _family(session, first)
    assert family.idle_expires_at == used_at + timedelta(hours=1)
    assert family.last_used_at == used_at


def test_rotation_at_the_idle_expiry_instant_is_refused(
    session: Session, user: User, oauth_client: Client
) -> None:
    first = start(session, user, oauth_client)

    with pytest.raises(InvalidGrant):
        rotate(session, oauth_client, first.token, NOW + timedelta(hours=1))

    assert _token_row(session, first.token).used_at is None


def test_retry_exactly_at_the_end_of_the_grace_window_gets_the_same_successor(
    session: Session, user: User, oauth_client: Client
) -> None:
    first = start(session, user, oauth_client)
    used_at = NOW + timedelta(minutes=5)
    original = rotate(session, oauth_client, first.token, used_at)

    retry = rotate(session, oauth_client, first.token, used_at + GRACE)

    assert retry.token == original.token
    assert retry.replayed is True
    assert _family(session, first).revoked_at is None


def test_retry_one_second_after_the_grace_window_revokes_the_family(
    session: Session, user: User, oauth_client: Client
) -> None:
    first = start(session, user, oauth_client)
    used_at = NOW + timedelta(minutes=5)
    successor = rotate(session, oauth_client, first.token, used_at).token
    too_late = used_at + GRACE + timedelta(seconds=1)

    with pytest.raises(RefreshTokenReused):
        rotate(session, oauth_client, first.token, too_late)

    family = _family(session, first)
    assert family.revoked_at == too_late
    assert family.revoked_reason == "reuse_detected"
    with pytest.raises(InvalidGrant):
        rotate(session, oauth_client, successor, too_late)


def test_a_wider_scope_at_the_last_instant_of_the_grace_window_is_refused_and_revokes_nothing(
    session: Session, user: User, oauth_client: Client
) -> None:
    first = start(session, user, oauth_client)
    used_at = NOW + timedelta(minutes=5)
    rotate(session, oauth_client, first.token, used_at)

    with pytest.raises(InvalidScope):
        rotate_refresh_token(
            session,
            presented=first.token,
            client=oauth_client,
            requested_scope="read write admin",
            policy=POLICY,
            now=used_at + GRACE,
        )

    assert _family(session, first).revoked_at is None


def test_a_wider_scope_one_second_after_the_grace_window_is_reuse(
    session: Session, user: User, oauth_client: Client
) -> None:
    first = start(session, user, oauth_client)
    used_at = NOW + timedelta(minutes=5)
    rotate(session, oauth_client, first.token, used_at)
    too_late = used_at + GRACE + timedelta(seconds=1)

    with pytest.raises(RefreshTokenReused):
        rotate_refresh_token(
            session,
            presented=first.token,
            client=oauth_client,
            requested_scope="read write admin",
            policy=POLICY,
            now=too_late,
        )

    assert _family(session, first).revoked_reason == "reuse_detected"


def test_reuse_by_another_client_names_the_presenter_and_the_family_client(
    session: Session, user: User, oauth_client: Client
) -> None:
    first = start(session, user, oauth_client)
    rotate(session, oauth_client, first.token, NOW + timedelta(minutes=1))
    other = make_client(session, name="Other app").client

    with pytest.raises(RefreshTokenReused) as reuse:
        rotate(session, other, first.token, NOW + timedelta(minutes=1))

    assert (reuse.value.client_id, reuse.value.family_client_id) == (
        other.client_id,
        oauth_client.client_id,
    )


def test_successor_ciphertext_does_not_contain_the_successor_token(
    session: Session, user: User, oauth_client: Client
) -> None:
    first = start(session, user, oauth_client)
    successor = rotate(session, oauth_client, first.token, NOW + timedelta(minutes=1)).token

    sealed = _token_row(session, first.token).successor_ciphertext

    assert sealed is not None
    assert successor.encode() not in sealed
    assert base64.urlsafe_b64decode(successor.partition(".")[2] + "=") not in sealed
    assert first.token.encode() not in sealed


# -- revocation ------------------------------------------------------------------------------


def test_revoke_family_returns_false_when_already_revoked(
    session: Session, user: User, oauth_client: Client
) -> None:
    family = start(session, user, oauth_client).family
    later = NOW + timedelta(hours=2)

    first = revoke_family(session, family, RevocationReason.LOGOUT, NOW)
    second = revoke_family(session, family, RevocationReason.REVOKED_BY_CLIENT, later)

    assert (first, second) == (True, False)
    session.expire_all()
    assert (family.revoked_at, family.revoked_reason) == (NOW, "logout")


def test_revoke_user_families_counts_the_live_families_it_revoked(
    app: Flask, session: Session, user: User, oauth_client: Client
) -> None:
    other = make_user(app, session, email="bob@example.com")
    already = start(session, user, oauth_client).family
    revoke_family(session, already, RevocationReason.LOGOUT, NOW)
    live = [start(session, user, oauth_client).family for _ in range(2)]
    others = start(session, other, oauth_client).family
    later = NOW + timedelta(minutes=1)

    count = revoke_user_families(session, user.id, RevocationReason.USER_DISABLED, later)

    assert count == 2
    session.expire_all()
    assert [(f.revoked_at, f.revoked_reason) for f in live] == [(later, "user_disabled")] * 2
    assert (already.revoked_at, already.revoked_reason) == (NOW, "logout")
    assert others.revoked_at is None


def test_revoke_user_families_counts_zero_when_nothing_is_live(
    session: Session, user: User, oauth_client: Client
) -> None:
    start(session, user, oauth_client)
    revoke_user_families(session, user.id, RevocationReason.LOGOUT, NOW)

    assert revoke_user_families(session, user.id, RevocationReason.LOGOUT, NOW) == 0


# -- the family a token names -----------------------------------------------------------------


def _family_part(token: str) -> str:
    return token.partition(".")[0]


def _token_made_the_old_way(session: Session, issued: NewFamily) -> str:
    """The family's live token replaced by one shaped as tokens were before they named their
    family: 256 random bits, base64url, nothing else."""
    old = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_digest == digest_token(issued.token))
        .values(token_digest=digest_token(old))
    )
    return old


def test_a_made_up_token_naming_a_real_family_is_refused_and_revokes_nothing(
    session: Session, user: User, oauth_client: Client
) -> None:
    issued = start(session, user, oauth_client)
    later = NOW + timedelta(minutes=1)
    rotate(session, oauth_client, issued.token, later)
    forged = f"{_family_part(issued.token)}.{secrets.token_urlsafe(32)}"

    with pytest.raises(InvalidGrant) as refused:
        rotate(session, oauth_client, forged, later + timedelta(minutes=1))

    assert not isinstance(refused.value, RefreshTokenReused)
    assert _family(session, issued).revoked_at is None


def test_a_used_token_relabelled_with_another_family_revokes_neither(
    session: Session, user: User, oauth_client: Client
) -> None:
    mine = start(session, user, oauth_client)
    theirs = start(session, user, oauth_client)
    rotate(session, oauth_client, mine.token, NOW + timedelta(minutes=1))
    secret = mine.token.partition(".")[2]

    with pytest.raises(InvalidGrant) as refused:
        rotate(
            session,
            oauth_client,
            f"{_family_part(theirs.token)}.{secret}",
            NOW + timedelta(minutes=5),
        )

    assert not isinstance(refused.value, RefreshTokenReused)
    assert _family(session, mine).revoked_at is None
    assert _family(session, theirs).revoked_at is None


@pytest.mark.parametrize(
    "family_part",
    [
        "",  # nothing before the dot
        "short",
        "A" * 23,  # one character too many
        "!" * 22,  # not base64url
        "%%%%%%%%%%%%%%%%%%%%%%",
    ],
)
def test_a_token_whose_family_part_is_no_family_id_is_refused_and_revokes_nothing(
    session: Session, user: User, oauth_client: Client, family_part: str
) -> None:
    issued = start(session, user, oauth_client)
    secret = issued.token.partition(".")[2]

    with pytest.raises(InvalidGrant) as refused:
        rotate(session, oauth_client, f"{family_part}.{secret}", NOW + timedelta(minutes=1))

    assert not isinstance(refused.value, RefreshTokenReused)
    assert _family(session, issued).revoked_at is None
    assert _token_row(session, issued.token).used_at is None


def test_a_family_id_spelt_another_way_is_refused(
    session: Session, user: User, oauth_client: Client
) -> None:
    issued = start(session, user, oauth_client)
    family_part, _, secret = issued.token.partition(".")
    # The last character of 22 carries only 2 bits: base64 decoders take a neighbour as the
    # same bytes. Only the spelling that was issued names the family.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(family_part[-1])
    respelt = family_part[:-1] + alphabet[last | 1 if last % 2 == 0 else last & ~1]
    assert base64.urlsafe_b64decode(respelt + "==") == issued.family_id.bytes

    with pytest.raises(InvalidGrant):
        rotate(session, oauth_client, f"{respelt}.{secret}", NOW + timedelta(minutes=1))

    assert _token_row(session, issued.token).used_at is None


def test_a_token_issued_before_tokens_named_their_family_still_rotates(
    session: Session, user: User, oauth_client: Client
) -> None:
    issued = start(session, user, oauth_client)
    old = _token_made_the_old_way(session, issued)

    successor = rotate(session, oauth_client, old, NOW + timedelta(minutes=1))

    assert successor.family_id == issued.family_id
    assert FAMILY_AND_256_BITS.match(successor.token)
    assert _family_part(successor.token) == _family_part(issued.token)
    assert _token_row(session, old).used_at == NOW + timedelta(minutes=1)
    assert rotate(session, oauth_client, successor.token, NOW + timedelta(minutes=2)).token


def test_a_token_issued_before_tokens_named_their_family_gets_the_grace_window_and_reuse(
    session: Session, user: User, oauth_client: Client
) -> None:
    issued = start(session, user, oauth_client)
    old = _token_made_the_old_way(session, issued)
    successor = rotate(session, oauth_client, old, NOW + timedelta(minutes=1))

    retried = rotate(session, oauth_client, old, NOW + timedelta(minutes=1) + GRACE)
    assert retried.token == successor.token
    assert retried.replayed

    with pytest.raises(RefreshTokenReused):
        rotate(session, oauth_client, old, NOW + timedelta(minutes=2) + GRACE)
    assert _family(session, issued).revoked_reason == RevocationReason.REUSE_DETECTED
