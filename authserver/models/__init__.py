"""The persistent model, one module per aggregate. Importing this package registers every
table on ``Base.metadata`` (alembic's env.py relies on that)."""

from authserver.models.account_links import AccountLink
from authserver.models.audit import AuditEvent
from authserver.models.authorization import (
    AuthorizationCode,
    Consent,
    DeviceAuthorization,
    PushedAuthorizationRequest,
)
from authserver.models.clients import Client
from authserver.models.dpop import DPoPProofSeen
from authserver.models.keys import KeyState, SigningKey
from authserver.models.outbox import OutboundMessage
from authserver.models.passkeys import Passkey, PasskeyChallenge
from authserver.models.registration_tokens import InitialAccessToken
from authserver.models.revocations import Revocation
from authserver.models.second_factors import RecoveryCode, TotpCredential
from authserver.models.security_events import SecurityEvent
from authserver.models.sessions import AMR_PASSWORD, BrowserSession, BrowserSessionClient
from authserver.models.throttles import SignInThrottle
from authserver.models.tokens import RefreshFamily, RefreshToken
from authserver.models.users import User

__all__ = [
    "AMR_PASSWORD",
    "AccountLink",
    "AuditEvent",
    "AuthorizationCode",
    "BrowserSession",
    "BrowserSessionClient",
    "Client",
    "Consent",
    "DPoPProofSeen",
    "DeviceAuthorization",
    "InitialAccessToken",
    "KeyState",
    "OutboundMessage",
    "Passkey",
    "PasskeyChallenge",
    "PushedAuthorizationRequest",
    "RecoveryCode",
    "RefreshFamily",
    "RefreshToken",
    "Revocation",
    "SecurityEvent",
    "SignInThrottle",
    "SigningKey",
    "TotpCredential",
    "User",
]
