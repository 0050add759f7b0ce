"""An authenticator app as a second factor (services/totp.py): enrolment, the secret sealed at
rest, RFC 6238 codes with one step of drift, each code once (also when two requests race)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from flask import Flask
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from authserver.models import RecoveryCode, TotpCredential, User
from authserver.runtime import runtime
from authserver.services import recovery_codes
from authserver.services.audit import recent_events
from authserver.services.keys import KeyCipher
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.totp import (
    NoTotpEnrolment,
    TotpAlreadyEnrolled,
    TotpEnrolment,
    TotpSecretUnreadable,
    begin_enrolment,
    confirm_enrolment,
    has_confirmed_totp,
    remove_totp,
    verify_code,
)
from authserver.services.users import create_user, delete_account
from tests.conftest import StatementLog, truncate_all
from tests.helpers import HANG_SECONDS, PASSWORD, make_user, wait_until

# A time in the middle of a 30-second step, so "one step either side" is unambiguous.
NOW = datetime(2026, 12, 6, 12, 0, 15, tzinfo=UTC)
STEP = timedelta(seconds=30)
# When the enrolment was confirmed: long enough before NOW that its code is of no step tested.
ENROLLED_AT = NOW - timedelta(hours=1)


def code_at(secret: str, when: datetime, steps: int = 0) -> str:
    """What the user's app shows at ``when`` (``steps`` steps later or earlier)."""
    return pyotp.TOTP(secret).at(when, counter_offset=steps)


def wrong_code(secret: str, when: datetime) -> str:
    """Six digits that are no code of the drift window at ``when``."""
    window = {code_at(secret, when, steps) for steps in (-1, 0, 1)}
    return next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in window)


@pytest.fixture
def cipher(app: Flask) -> KeyCipher:
    return runtime(app).key_cipher


@pytest.fixture
def user(app: Flask, session: Session) -> User:
    return make_user(app, session)


def enrol(session: Session, cipher: KeyCipher, user: User, now: datetime = NOW) -> TotpEnrolment:
    return begin_enrolment(session, cipher, user, now, issuer="authserver")


def enrolled(session: Session, cipher: KeyCipher, user: User) -> str:
    """Enrol and confirm an app for ``user``; return its secret."""
    enrolment = enrol(session, cipher, user, ENROLLED_AT)
    assert confirm_enrolment(
        session, cipher, user, code_at(enrolment.secret, ENROLLED_AT), ENROLLED_AT
    )
    return enrolment.secret


def _row(session: Session, user: User) -> TotpCredential:
    return session.scalars(
        select(TotpCredential)
        .where(TotpCredential.user_id == user.id)
        .execution_options(populate_existing=True)
    ).one()


# -- enrolment -------------------------------------------------------------------------------


def test_enrolment_gives_a_160_bit_manual_key_and_an_otpauth_uri_naming_product_and_address(
    app: Flask, session: Session, cipher: KeyCipher, user: User
) -> None:
    enrolment = begin_enrolment(session, cipher, user, NOW, issuer=runtime(app).config.product_name)

    assert len(base64.b32decode(enrolment.secret)) == 20
    uri = urlsplit(enrolment.uri)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == "/authserver:ann@example.com"
    query = parse_qs(uri.query)
    assert query["secret"] == [enrolment.secret]
    assert query["issuer"] == ["authserver"]
    # What an app scanning it would compute is what the server accepts.
    assert pyotp.parse_uri(enrolment.uri).at(NOW) == code_at(enrolment.secret, NOW)


# Reads the raw rows with PostgreSQL's row-to-text cast and binds UUIDs as PostgreSQL does.
@pytest.mark.postgres_only
def test_the_secret_is_stored_sealed_never_in_the_clear(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    enrolment = enrol(session, cipher, user)
    raw_secret = base64.b32decode(enrolment.secret)

    (ciphertext,) = session.execute(text("SELECT secret_ciphertext FROM totp_credentials")).one()
    (row_text,) = session.execute(text("SELECT t::text FROM totp_credentials t")).one()

    assert raw_secret not in bytes(ciphertext)
    assert enrolment.secret.encode() not in bytes(ciphertext)
    for shown in (enrolment.secret, enrolment.secret.lower(), raw_secret.hex()):
        assert shown not in row_text
    assert cipher.open(bytes(ciphertext), f"totp:{user.id}") == raw_secret


# Reads the raw rows with PostgreSQL's row-to-text cast and binds UUIDs as PostgreSQL does.
@pytest.mark.postgres_only
def test_a_sealed_secret_moved_to_another_users_row_does_not_open(
    app: Flask, session: Session, cipher: KeyCipher, user: User
) -> None:
    ann = enrol(session, cipher, user)
    bob = make_user(app, session, "bob@example.com")
    enrol(session, cipher, bob)
    session.execute(
        text(
            "UPDATE totp_credentials SET secret_ciphertext = "
            "(SELECT secret_ciphertext FROM totp_credentials WHERE user_id = :ann) "
            "WHERE user_id = :bob"
        ),
        {"ann": user.id, "bob": bob.id},
    )

    with pytest.raises(TotpSecretUnreadable) as unreadable:
        confirm_enrolment(session, cipher, bob, code_at(ann.secret, NOW), NOW)

    assert ann.secret not in str(unreadable.value)
    assert _row(session, bob).confirmed_at is None


def test_an_unconfirmed_enrolment_does_not_verify_sign_in_codes(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    enrolment = enrol(session, cipher, user)

    assert not verify_code(session, cipher, user, code_at(enrolment.secret, NOW), NOW)
    assert not has_confirmed_totp(session, user)
    assert _row(session, user).last_used_step is None


def test_a_wrong_code_leaves_the_enrolment_unconfirmed(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    enrolment = enrol(session, cipher, user)

    assert not confirm_enrolment(session, cipher, user, wrong_code(enrolment.secret, NOW), NOW)
    assert _row(session, user).confirmed_at is None
    assert not has_confirmed_totp(session, user)
    assert recent_events(session, event_type="totp_enrolled") == []

    assert confirm_enrolment(session, cipher, user, code_at(enrolment.secret, NOW), NOW)
    assert _row(session, user).confirmed_at == NOW
    assert has_confirmed_totp(session, user)
    (event,) = recent_events(session, event_type="totp_enrolled")
    assert event.user_id == user.id
    assert enrolment.secret not in str(event.details)


def test_a_confirmed_app_cannot_be_confirmed_again_nor_replaced_by_a_new_enrolment(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    secret = enrolled(session, cipher, user)
    sealed = _row(session, user).secret_ciphertext

    with pytest.raises(NoTotpEnrolment):
        confirm_enrolment(session, cipher, user, code_at(secret, NOW), NOW)
    with pytest.raises(TotpAlreadyEnrolled):
        enrol(session, cipher, user)

    assert _row(session, user).secret_ciphertext == sealed
    assert _row(session, user).confirmed_at == ENROLLED_AT
    assert verify_code(session, cipher, user, code_at(secret, NOW), NOW)


def test_confirming_without_an_enrolment_is_refused(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    with pytest.raises(NoTotpEnrolment):
        confirm_enrolment(session, cipher, user, "123456", NOW)


def test_beginning_again_replaces_an_unconfirmed_enrolment(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    first = enrol(session, cipher, user)
    second = enrol(session, cipher, user)

    assert first.secret != second.secret
    assert session.scalar(select(TotpCredential.id).where(TotpCredential.user_id == user.id))
    assert not confirm_enrolment(session, cipher, user, code_at(first.secret, NOW), NOW)
    assert confirm_enrolment(session, cipher, user, code_at(second.secret, NOW), NOW)


def test_the_code_that_confirmed_the_app_does_not_also_sign_in(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    enrolment = enrol(session, cipher, user)
    code = code_at(enrolment.secret, NOW)
    assert confirm_enrolment(session, cipher, user, code, NOW)

    assert not verify_code(session, cipher, user, code, NOW)


# -- codes: RFC 6238 -------------------------------------------------------------------------

# The secret of RFC 6238 Appendix B's SHA-1 test vectors.
RFC_SECRET = b"12345678901234567890"


def _confirmed_with(session: Session, cipher: KeyCipher, user: User, secret: bytes) -> None:
    """A confirmed app with a secret of the test's choosing, sealed as the service seals."""
    session.add(
        TotpCredential(
            user_id=user.id,
            secret_ciphertext=cipher.seal(secret, f"totp:{user.id}"),
            confirmed_at=ENROLLED_AT,
        )
    )
    session.flush()


@pytest.mark.parametrize(
    ("unix_time", "code"),
    [
        # RFC 6238 Appendix B, SHA-1 (its 8-digit codes, truncated to 6 by RFC 4226 §5.3).
        (59, "287082"),
        (1111111109, "081804"),
        (1111111111, "050471"),
        (1234567890, "005924"),
        (2000000000, "279037"),
        (20000000000, "353130"),
    ],
)
def test_the_codes_are_those_of_rfc_6238s_test_vectors(
    session: Session, cipher: KeyCipher, user: User, unix_time: int, code: str
) -> None:
    _confirmed_with(session, cipher, user, RFC_SECRET)

    assert verify_code(session, cipher, user, code, datetime.fromtimestamp(unix_time, UTC))


@pytest.mark.parametrize("steps", [-1, 0, 1])
def test_a_code_of_the_current_previous_or_next_step_is_accepted(
    session: Session, cipher: KeyCipher, user: User, steps: int
) -> None:
    secret = enrolled(session, cipher, user)

    assert verify_code(session, cipher, user, code_at(secret, NOW, steps), NOW)


@pytest.mark.parametrize("steps", [-2, 2, -3, 3])
def test_a_code_two_or_more_steps_off_is_refused(
    session: Session, cipher: KeyCipher, user: User, steps: int
) -> None:
    # A fixed secret, so that no code of the window happens to equal the one tried.
    secret = base64.b32encode(RFC_SECRET).decode()
    _confirmed_with(session, cipher, user, RFC_SECRET)
    code = code_at(secret, NOW, steps)
    assert code not in {code_at(secret, NOW, near) for near in (-1, 0, 1)}

    assert not verify_code(session, cipher, user, code, NOW)
    assert verify_code(session, cipher, user, code_at(secret, NOW), NOW)


def test_a_code_works_once(session: Session, cipher: KeyCipher, user: User) -> None:
    secret = enrolled(session, cipher, user)
    code = code_at(secret, NOW)

    assert verify_code(session, cipher, user, code, NOW)
    assert not verify_code(session, cipher, user, code, NOW)
    # Still refused later in the window, when the code is the "previous step".
    assert not verify_code(session, cipher, user, code, NOW + STEP)


def test_an_older_code_after_a_newer_one_is_refused(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    secret = enrolled(session, cipher, user)

    assert verify_code(session, cipher, user, code_at(secret, NOW, 1), NOW)

    assert not verify_code(session, cipher, user, code_at(secret, NOW), NOW)
    assert not verify_code(session, cipher, user, code_at(secret, NOW, -1), NOW)
    assert verify_code(session, cipher, user, code_at(secret, NOW, 2), NOW + STEP)


def test_spaces_in_a_code_are_allowed(session: Session, cipher: KeyCipher, user: User) -> None:
    secret = enrolled(session, cipher, user)
    code = code_at(secret, NOW)

    assert verify_code(session, cipher, user, f" {code[:3]} {code[3:]} ", NOW)


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
MALFORMED: dict[str, Callable[[str], str]] = {
    "letters": lambda code: "abcdef",
    "five digits": lambda code: code[:5],
    "seven digits": lambda code: code + "0",
    "arabic-indic digits": lambda code: code.translate(ARABIC_INDIC),
    "fullwidth digits": lambda code: "".join(chr(ord(c) + 0xFEE0) for c in code),
    "a trailing newline inside": lambda code: code[:3] + "\n" + code[3:],
    "a NUL": lambda code: code + "\x00",
    "ten kilobytes": lambda code: code * 1707,
    "empty": lambda code: "",
}


@pytest.mark.parametrize("shape", list(MALFORMED))
def test_a_malformed_code_is_refused_without_asking_the_database(
    session: Session, cipher: KeyCipher, user: User, statements: StatementLog, shape: str
) -> None:
    secret = enrolled(session, cipher, user)
    typed = MALFORMED[shape](code_at(secret, NOW))
    statements.statements.clear()

    assert not verify_code(session, cipher, user, typed, NOW)

    assert statements.statements == []
    # The right code still works: nothing was spent.
    assert verify_code(session, cipher, user, code_at(secret, NOW), NOW)


# -- two requests with one code --------------------------------------------------------------


def _blocked_on_a_lock(engine: Engine, backend_pid: int) -> bool:
    with engine.connect() as conn:
        blockers = conn.execute(
            text("SELECT cardinality(pg_blocking_pids(:pid))"), {"pid": backend_pid}
        ).scalar_one()
    return bool(blockers)


def race_two_sessions(engine: Engine, attempt: Callable[[Session], bool]) -> list[bool]:
    """``attempt`` on two connections of their own: the first runs and holds its transaction
    open; the second runs in a thread until it waits on the first's row lock; then the first
    commits. Returns both outcomes, the first's first."""
    first = Session(engine)
    second = Session(engine)
    outcome: list[bool | BaseException] = []
    try:
        first_result = attempt(first)
        second_pid = second.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def run_second() -> None:
            try:
                outcome.append(attempt(second))
                second.commit()
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

        racer = threading.Thread(target=run_second)
        racer.start()
        wait_until(
            lambda: bool(outcome) or _blocked_on_a_lock(engine, second_pid),
            "the second attempt to wait on the first's row lock",
        )
        assert not outcome, f"the second attempt did not wait for the first: {outcome}"
        first.commit()
        racer.join(timeout=HANG_SECONDS)
        (second_result,) = outcome
        if isinstance(second_result, BaseException):
            raise second_result
        return [first_result, second_result]
    finally:
        first.close()
        second.close()


@pytest.fixture
def committed_user(engine: Engine, app: Flask) -> Iterator[User]:
    rt = runtime(app)
    with Session(engine, expire_on_commit=False) as setup:
        user = create_user(
            setup, rt.hasher, "racer@example.com", PASSWORD, password_policy=rt.password_policy
        )
        setup.commit()
    try:
        yield user
    finally:
        truncate_all(engine)


@pytest.mark.postgres_only
def test_two_requests_racing_with_one_code_let_exactly_one_in(
    engine: Engine, cipher: KeyCipher, committed_user: User
) -> None:
    with Session(engine, expire_on_commit=False) as setup:
        user = setup.get(User, committed_user.id)
        assert user is not None
        secret = enrolled(setup, cipher, user)
        setup.commit()
    code = code_at(secret, NOW)

    def attempt(session: Session) -> bool:
        racer = session.get(User, committed_user.id)
        assert racer is not None
        return verify_code(session, cipher, racer, code, NOW)

    assert race_two_sessions(engine, attempt) == [True, False]


@pytest.mark.postgres_only
def test_two_enrolments_begun_at_once_leave_one_app_the_later_ones(
    engine: Engine, cipher: KeyCipher, committed_user: User
) -> None:
    handed: list[str] = []

    def attempt(session: Session) -> bool:
        racer = session.get(User, committed_user.id)
        assert racer is not None
        handed.append(enrol(session, cipher, racer).secret)
        return True

    # The second insert waits on the first's uncommitted row in the unique index, fails in
    # its savepoint when the first commits, and replaces the secret instead.
    assert race_two_sessions(engine, attempt) == [True, True]

    with Session(engine) as check:
        user = check.get(User, committed_user.id)
        assert user is not None
        assert check.scalar(select(func.count()).select_from(TotpCredential)) == 1
        assert not confirm_enrolment(check, cipher, user, code_at(handed[0], NOW), NOW)
        assert confirm_enrolment(check, cipher, user, code_at(handed[1], NOW), NOW)


# -- removal and deletion --------------------------------------------------------------------


def test_removing_the_app_ends_its_codes_and_the_recovery_codes(
    session: Session, cipher: KeyCipher, user: User
) -> None:
    secret = enrolled(session, cipher, user)
    codes = recovery_codes.generate(session, user, NOW)

    assert remove_totp(session, user, NOW)

    assert not verify_code(session, cipher, user, code_at(secret, NOW), NOW)
    assert not has_confirmed_totp(session, user)
    assert not recovery_codes.use_code(session, user, codes[0], NOW)
    (event,) = recent_events(session, event_type="totp_removed")
    assert event.details["method"] == "account_page"
    assert not remove_totp(session, user, NOW)
    # A new app can be enrolled from scratch.
    enrolment = enrol(session, cipher, user)
    assert enrolment.secret != secret


def test_deleting_the_user_deletes_their_app_and_recovery_codes(
    app: Flask, session: Session, cipher: KeyCipher, user: User
) -> None:
    enrolled(session, cipher, user)
    recovery_codes.generate(session, user, NOW)
    bob = make_user(app, session, "bob@example.com")
    enrolled(session, cipher, bob)
    recovery_codes.generate(session, bob, NOW)

    delete_account(
        session,
        user,
        NOW,
        runtime(app).notices,
        reason=RevocationReason.USER_DELETED,
        by_owner=False,
    )

    owners = set(session.scalars(select(TotpCredential.user_id)))
    owners |= set(session.scalars(select(RecoveryCode.user_id)))
    assert owners == {bob.id}
