from __future__ import annotations

from collections.abc import Iterator

import pytest

from authserver.resource import TokenVerifier
from tests.resource.support import AUDIENCE, FakeClock, FakeIssuer, IssuerKey, ec_key


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def issuer(clock: FakeClock) -> Iterator[FakeIssuer]:
    server = FakeIssuer(clock)
    yield server
    server.stop()


@pytest.fixture
def signing_key(issuer: FakeIssuer) -> IssuerKey:
    """An ES256 key the issuer publishes, as authserver does by default."""
    key = ec_key()
    issuer.publish(key)
    return key


@pytest.fixture
def verifier(issuer: FakeIssuer, clock: FakeClock) -> TokenVerifier:
    return TokenVerifier(issuer.url, AUDIENCE, clock=clock)
