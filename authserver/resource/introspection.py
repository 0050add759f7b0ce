"""Online token checks through the issuer's introspection endpoint (RFC 7662).

Offline verification trusts a token until it expires (or until the revocation feed's next
poll). For the few endpoints where that delay is too long, ask the issuer on each request:
``require_token(verifier, introspect=IntrospectionClient(...))``. It costs a round trip per
request, and the endpoint fails closed when the issuer cannot be reached.
"""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

from .discovery import endpoint_of, fetch_server_metadata
from .errors import IntrospectionFailed
from .transport import (
    FetchFailed,
    HttpCall,
    basic_authorization,
    call,
    json_object,
    make_urllib_http,
)


class IntrospectionClient:
    """Asks the issuer whether a token is active, authenticating as a registered client."""

    def __init__(
        self, issuer: str, client_id: str, client_secret: str, http: HttpCall | None = None
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("introspection needs the resource server's client credentials")
        self.issuer = issuer
        self._authorization = basic_authorization(client_id, client_secret)
        self._http = http or make_urllib_http()
        self._endpoint: str | None = None
        self._discovery_lock = threading.Lock()

    def introspect(self, token: str) -> dict[str, Any]:
        """The introspection response (RFC 7662 §2.2). ``{"active": false}`` means the token
        must be refused, whatever the reason; nothing else is said about it then."""
        endpoint = self._introspection_endpoint()
        # RFC 7662 §2.1: the token as a form parameter, with a hint of its type.
        body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"})
        headers = {
            "Authorization": self._authorization,
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        try:
            status, _, raw = call(self._http, "POST", endpoint, headers, body.encode())
            if status != 200:
                raise FetchFailed(f"POST {endpoint}: HTTP {status}")
            answer = json_object(raw, "the introspection response")
        except FetchFailed as exc:
            raise IntrospectionFailed(str(exc)) from exc
        if not isinstance(answer.get("active"), bool):
            raise IntrospectionFailed("the introspection response has no boolean active member")
        return answer

    def is_active(self, token: str) -> bool:
        return self.introspect(token)["active"] is True

    def _introspection_endpoint(self) -> str:
        with self._discovery_lock:
            if self._endpoint is None:
                try:
                    metadata = fetch_server_metadata(self.issuer, self._http)
                    self._endpoint = endpoint_of(metadata, "introspection_endpoint")
                except FetchFailed as exc:
                    raise IntrospectionFailed(str(exc)) from exc
            return self._endpoint
