"""Authorization server metadata (RFC 8414): where the issuer keeps its JWKS and endpoints."""

from __future__ import annotations

import urllib.parse
from typing import Any

from .transport import FetchFailed, HttpCall, call, json_object

# authserver serves its metadata at the issuer plus this path. (RFC 8414 §3.1 inserts the
# well-known segment before an issuer's path component; authserver issuers have none.)
METADATA_PATH = "/.well-known/oauth-authorization-server"


def issuer_url(issuer: str, path: str) -> str:
    return issuer.rstrip("/") + path


def fetch_server_metadata(issuer: str, http: HttpCall) -> dict[str, Any]:
    """The issuer's metadata document, checked to be the issuer's own."""
    url = issuer_url(issuer, METADATA_PATH)
    status, _, body = call(http, "GET", url, {"Accept": "application/json"})
    if status != 200:
        raise FetchFailed(f"GET {url}: HTTP {status}")
    metadata = json_object(body, "the server metadata")
    # RFC 8414 §3.3: the issuer in the document must be identical to the one we asked, or an
    # attacker who controls the document could substitute their own keys.
    if metadata.get("issuer") != issuer:
        raise FetchFailed("the server metadata names another issuer")
    return metadata


def endpoint_of(metadata: dict[str, Any], name: str) -> str:
    """A URL member of the metadata, refusing anything but http(s)."""
    url = metadata.get(name)
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise FetchFailed(f"the server metadata has no usable {name}")
    return url
