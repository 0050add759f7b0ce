"""The revocation feed, polled from a fake feed server that implements the contract in
``authserver/resource/revocation_feed.py`` (the real endpoint is not relied on here)."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import pytest

from authserver.resource import RevocationState, TokenRevoked, TokenVerifier
from authserver.resource.revocation_feed import THREAD_NAME, UserCutoff
from tests.helpers import HANG_SECONDS
from tests.resource.support import (
    AUDIENCE,
    FEED_CLIENT_ID,
    FEED_CLIENT_SECRET,
    FakeClock,
    FakeIssuer,
    IssuerKey,
    mint,
)

FEED = "/oauth/revocations"
QUICK_POLL = 0.02
HOUR = 3600


def feed_verifier(issuer: FakeIssuer, clock: FakeClock, poll_interval: float) -> TokenVerifier:
    return TokenVerifier(
        issuer.url,
        AUDIENCE,
        clock=clock,
        revocation_feed=True,
        client_id=FEED_CLIENT_ID,
        client_secret=FEED_CLIENT_SECRET,
        poll_interval=poll_interval,
    )


@pytest.fixture
def one_poll(issuer: FakeIssuer, clock: FakeClock) -> Iterator[TokenVerifier]:
    """Polls once when started; the next poll is an hour away, so exactly one happens."""
    verifier = feed_verifier(issuer, clock, poll_interval=HOUR)
    yield verifier
    verifier.close()


@pytest.fixture
def polling(issuer: FakeIssuer, clock: FakeClock) -> Iterator[TokenVerifier]:
    """Polls every 20 ms in the background."""
    verifier = feed_verifier(issuer, clock, poll_interval=QUICK_POLL)
    yield verifier
    verifier.close()


def wait_until(condition: Callable[[], bool], timeout: float = HANG_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def feed_state(verifier: TokenVerifier) -> RevocationState:
    current = verifier.revocation_state
    assert current is not None
    return current


def feed_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


# -- revocations reach verify ------------------------------------------------------------------


def test_revoked_sid_is_rejected_after_one_poll(
    one_poll: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.revoke(type="sid", value="family-1", expires_at=clock() + 300)

    with pytest.raises(TokenRevoked):
        one_poll.verify(mint(signing_key, issuer.url, clock(), sid="family-1"))
    assert one_poll.verify(mint(signing_key, issuer.url, clock(), sid="family-2")).session_id
    assert len(issuer.requests_to(FEED)) == 1


def test_revoked_jti_is_rejected_after_one_poll(
    one_poll: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.revoke(type="jti", value="token-9", expires_at=clock() + 300)

    with pytest.raises(TokenRevoked):
        one_poll.verify(mint(signing_key, issuer.url, clock(), jti="token-9"))
    assert one_poll.verify(mint(signing_key, issuer.url, clock(), jti="token-8")).jti == "token-8"
    assert len(issuer.requests_to(FEED)) == 1


def test_token_issued_before_the_users_not_before_is_rejected(
    one_poll: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    signed_out_at = int(clock())
    issuer.revoke(type="sub", value="user-1", not_before=signed_out_at, expires_at=clock() + 300)

    with pytest.raises(TokenRevoked):
        one_poll.verify(mint(signing_key, issuer.url, clock(), iat=signed_out_at - 1))
    assert one_poll.verify(mint(signing_key, issuer.url, clock(), iat=signed_out_at))
    other_user = mint(signing_key, issuer.url, clock(), sub="user-2", iat=signed_out_at - 1)
    assert one_poll.verify(other_user).subject == "user-2"
    assert len(issuer.requests_to(FEED)) == 1


def test_token_of_a_disabled_client_issued_before_its_not_before_is_rejected(
    one_poll: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    refused_from = int(clock()) + 6  # the server's client-cache window after the disable
    issuer.revoke(type="client", value="app-1", not_before=refused_from, expires_at=clock() + 300)

    # Its own client_credentials token: no sid, its subject is the client itself.
    own = mint(signing_key, issuer.url, clock(), sub="app-1", client_id="app-1")
    with pytest.raises(TokenRevoked):
        one_poll.verify(own)
    with pytest.raises(TokenRevoked):
        one_poll.verify(mint(signing_key, issuer.url, clock(), client_id="app-1", sid="f-1"))
    later = mint(signing_key, issuer.url, clock(), client_id="app-1", iat=refused_from)
    assert one_poll.verify(later).client_id == "app-1"
    other = mint(signing_key, issuer.url, clock(), sub="app-2", client_id="app-2")
    assert one_poll.verify(other).client_id == "app-2"
    assert len(issuer.requests_to(FEED)) == 1


def test_every_token_of_a_withdrawn_key_is_rejected_though_the_jwks_still_has_it(
    one_poll: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    before = mint(signing_key, issuer.url, clock())
    assert one_poll.verify(before).subject  # the JWKS cache now holds the key
    issuer.revoke(type="kid", value=signing_key.kid, expires_at=clock() + 300)

    assert one_poll.poll_revocations() is True

    with pytest.raises(TokenRevoked, match="signing key was withdrawn"):
        one_poll.verify(before)
    with pytest.raises(TokenRevoked):
        one_poll.verify(mint(signing_key, issuer.url, clock() + 60, iat=clock() + 60))
    assert len(issuer.requests_to(FEED)) == 2


def test_a_withdrawn_key_counts_for_nothing_after_its_entry_expires(
    one_poll: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.revoke(type="kid", value=signing_key.kid, expires_at=clock() + 300)
    one_poll.start()
    with pytest.raises(TokenRevoked):
        one_poll.verify(mint(signing_key, issuer.url, clock()))

    clock.advance(301)

    assert one_poll.verify(mint(signing_key, issuer.url, clock())).subject
    assert feed_state(one_poll).pruned(clock()).revoked_kids == {}


def test_start_polls_before_returning(
    one_poll: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    issuer.revoke(type="sid", value="family-1", expires_at=clock() + 300)

    one_poll.start()

    state = feed_state(one_poll)
    assert set(state.revoked_sids) == {"family-1"}
    assert state.cursor == 1
    assert state.last_success == clock()


def test_poll_authenticates_the_client_and_fetches_everything_first(
    one_poll: TokenVerifier, issuer: FakeIssuer
) -> None:
    one_poll.start()

    [first] = issuer.requests_to(FEED)
    assert (
        first.headers["authorization"]
        == "Basic cmVzb3VyY2Utc2VydmVyOnJlc291cmNlLXNlcnZlci1zZWNyZXQ="
    )
    assert first.query == {}
    assert "if-none-match" not in first.headers


def test_revocation_made_later_arrives_with_a_background_poll(
    polling: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), sid="family-1")
    assert polling.verify(token).session_id == "family-1"

    issuer.revoke(type="sid", value="family-1", expires_at=clock() + 300)
    wait_until(lambda: "family-1" in feed_state(polling).revoked_sids)

    with pytest.raises(TokenRevoked):
        polling.verify(token)
    assert issuer.requests_to(FEED)[1].query == {"since": "0"}


def test_later_polls_continue_from_the_cursor(
    polling: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    issuer.revoke(type="jti", value="a", expires_at=clock() + 300)
    issuer.revoke(type="jti", value="b", expires_at=clock() + 300)
    polling.start()
    issuer.revoke(type="jti", value="c", expires_at=clock() + 300)
    wait_until(lambda: feed_state(polling).cursor == 3)

    first, second = issuer.requests_to(FEED)[:2]
    assert first.query == {}
    assert second.query == {"since": "2"}
    assert second.headers["if-none-match"] == '"2"'
    state = feed_state(polling)
    assert set(state.revoked_jtis) == {"a", "b", "c"}


def test_an_entry_sent_again_changes_nothing(
    one_poll: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    """The feed delivers at least once: an entry may come again, in the same answer or a
    later one, after entries written after it."""
    family = {"type": "sid", "value": "family-1", "expires_at": clock() + 300}
    signed_out = {"type": "sub", "value": "user-1", "not_before": clock() - 10}
    earlier_sign_out = {**signed_out, "not_before": clock() - 100, "expires_at": clock() + 200}
    for entry in (family, {**signed_out, "expires_at": clock() + 300}, family, earlier_sign_out):
        issuer.revoke(**entry)

    one_poll.start()

    state = feed_state(one_poll)
    assert dict(state.revoked_sids) == {"family-1": clock() + 300}
    assert dict(state.user_not_before) == {
        "user-1": UserCutoff(not_before=clock() - 10, expires_at=clock() + 300)
    }


# -- 304, expiry, failures ---------------------------------------------------------------------


def test_unchanged_feed_answers_304_and_the_state_is_kept(
    polling: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.revoke(type="sid", value="family-1", expires_at=clock() + 300)
    polling.start()
    issuer.wait_for_requests(FEED, 4)

    conditional = issuer.requests_to(FEED)[1:4]
    assert all(r.headers["if-none-match"] == '"1"' for r in conditional)
    state = feed_state(polling)
    assert state.cursor == 1
    assert set(state.revoked_sids) == {"family-1"}
    with pytest.raises(TokenRevoked):
        polling.verify(mint(signing_key, issuer.url, clock(), sid="family-1"))


def test_entries_are_dropped_after_their_expires_at(
    polling: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.revoke(type="sid", value="family-1", expires_at=clock() + 60)
    issuer.revoke(type="jti", value="token-1", expires_at=clock() + 60)
    issuer.revoke(type="sub", value="user-1", not_before=clock(), expires_at=clock() + 60)
    # Long-lived so that only the entries' expiry decides (the contract sets expires_at past
    # the last exp of the tokens an entry covers; this token breaks that on purpose).
    token = mint(
        signing_key, issuer.url, clock(), sid="family-1", jti="token-1",
        iat=int(clock()) - 1, exp=int(clock()) + HOUR,
    )  # fmt: skip
    with pytest.raises(TokenRevoked):
        polling.verify(token)

    clock.advance(61)

    assert polling.verify(token).subject == "user-1"  # before any poll has pruned anything
    seen = len(issuer.requests_to(FEED))
    issuer.wait_for_requests(FEED, seen + 1)
    wait_until(lambda: not feed_state(polling).revoked_sids)
    state = feed_state(polling)
    assert (state.revoked_jtis, state.user_not_before) == ({}, {})


def test_entries_already_expired_when_they_arrive_are_not_kept(
    one_poll: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    issuer.feed_clock_skew = -120  # the issuer's clock is behind: it still lists this entry
    issuer.revoke(type="jti", value="expired-here", expires_at=clock() - 60)
    issuer.revoke(type="jti", value="live", expires_at=clock() + 600)

    one_poll.start()

    assert set(feed_state(one_poll).revoked_jtis) == {"live"}


def test_failed_poll_keeps_the_state_and_retries(
    polling: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.revoke(type="sid", value="family-1", expires_at=clock() + 300)
    polling.start()
    good = polling.revocation_state
    issuer.feed_status = 500
    issuer.revoke(type="sid", value="family-2", expires_at=clock() + 300)
    seen = len(issuer.requests_to(FEED))

    issuer.wait_for_requests(FEED, seen + 3)  # it keeps trying, each interval

    assert polling.revocation_state == good
    with pytest.raises(TokenRevoked):
        polling.verify(mint(signing_key, issuer.url, clock(), sid="family-1"))
    issuer.feed_status = 200
    wait_until(lambda: "family-2" in feed_state(polling).revoked_sids)


def test_unreachable_feed_keeps_the_state(
    polling: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="authserver.resource.revocation_feed")
    issuer.revoke(type="sid", value="family-1", expires_at=clock() + 300)
    token = mint(signing_key, issuer.url, clock(), sid="family-1")
    with pytest.raises(TokenRevoked):
        polling.verify(token)

    issuer.stop()
    # Several polls fail against the closed port, each with a warning.
    wait_until(lambda: sum("poll failed" in r.getMessage() for r in caplog.records[:]) >= 3)

    assert polling.revocation_feed_running
    with pytest.raises(TokenRevoked):
        polling.verify(token)


def test_feed_going_back_in_cursor_is_listed_again_from_the_start(
    polling: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    for jti in ("a", "b", "c"):
        issuer.revoke(type="jti", value=jti, expires_at=clock() + 300)
    polling.start()
    # The feed is restored from an older backup: cursor 1, one entry we have not seen.
    with issuer._lock:
        issuer.revocations[:] = [{"type": "jti", "value": "d", "expires_at": clock() + 300}]

    wait_until(lambda: "d" in feed_state(polling).revoked_jtis)

    assert any(r.query == {} for r in issuer.requests_to(FEED)[1:])


def test_unknown_and_broken_entries_are_skipped(
    one_poll: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    issuer.revoke(type="device", value="phone-1", expires_at=clock() + 300)
    issuer.revoke(type="sub", value="user-1", expires_at=clock() + 300)  # no not_before
    issuer.revoke(type="jti", value=7, expires_at=clock() + 300)
    issuer.revoke(type=["sub"], value="user-2", not_before=1, expires_at=clock() + 300)
    issuer.revoke(type="client", value="app-1", expires_at=clock() + 300)  # no not_before
    issuer.revoke(type="kid", value=["key-1"], expires_at=clock() + 300)
    issuer.revoke(type="jti", value="token-1", expires_at=clock() + 300)

    one_poll.start()

    state = feed_state(one_poll)
    assert (set(state.revoked_jtis), state.user_not_before, state.cursor) == ({"token-1"}, {}, 7)
    assert (state.client_not_before, state.revoked_kids) == ({}, {})


# -- lifecycle -----------------------------------------------------------------------------------


def test_close_stops_the_thread(polling: TokenVerifier, issuer: FakeIssuer) -> None:
    polling.start()
    issuer.wait_for_requests(FEED, 2)
    assert polling.revocation_feed_running
    assert len(feed_threads()) == 1

    polling.close()

    assert not polling.revocation_feed_running
    assert feed_threads() == []
    seen = len(issuer.requests_to(FEED))
    time.sleep(QUICK_POLL * 5)
    assert len(issuer.requests_to(FEED)) == seen


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_worker_runs_its_own_poller(
    polling: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    """gunicorn --preload builds the app, verifier included, then forks the workers; the
    parent's poller thread does not exist in them."""
    polling.start()
    token = mint(signing_key, issuer.url, clock())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the worker
        exit_code = 1
        try:
            polling.verify(token)
            exit_code = 0 if polling.revocation_feed_running else 2
        finally:
            os._exit(exit_code)

    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0


def test_context_manager_starts_and_closes(issuer: FakeIssuer, clock: FakeClock) -> None:
    with feed_verifier(issuer, clock, poll_interval=QUICK_POLL) as verifier:
        assert verifier.revocation_feed_running
        assert len(issuer.requests_to(FEED)) >= 1

    assert not verifier.revocation_feed_running
    assert feed_threads() == []


def test_no_thread_without_the_feed(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    verifier.start()
    verifier.verify(mint(signing_key, issuer.url, clock()))

    assert feed_threads() == []
    assert verifier.revocation_state is None
    assert issuer.requests_to(FEED) == []


def test_verify_after_close_does_not_restart_polling(
    one_poll: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    one_poll.close()

    assert one_poll.verify(mint(signing_key, issuer.url, clock())).subject == "user-1"
    assert feed_threads() == []
    assert issuer.requests_to(FEED) == []


@pytest.mark.parametrize(
    "credentials", [{}, {"client_id": FEED_CLIENT_ID}, {"client_secret": FEED_CLIENT_SECRET}]
)
def test_feed_needs_client_credentials(issuer: FakeIssuer, credentials: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="client_id and client_secret"):
        TokenVerifier(issuer.url, AUDIENCE, revocation_feed=True, **credentials)
