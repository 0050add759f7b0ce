"""examples/resource_server.py does what its docstring says, against a local issuer."""

from __future__ import annotations

from authserver.resource import TokenVerifier
from examples.resource_server import create_resource_app
from tests.dpop_keys import DPoPKey
from tests.resource.support import FakeClock, FakeIssuer, IssuerKey, mint


def test_example_api_answers_as_documented(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    api = create_resource_app(verifier).test_client()
    read_only = {"Authorization": "Bearer " + mint(signing_key, issuer.url, clock(), scope="read")}
    writer = {"Authorization": "Bearer " + mint(signing_key, issuer.url, clock(), scope="write")}

    assert api.get("/api/hello").headers["WWW-Authenticate"].startswith("Bearer, DPoP algs=")
    hello = api.get("/api/hello", headers=read_only)
    assert hello.status_code == 200
    assert hello.json is not None
    assert hello.json["hello"] == "user-1"
    assert api.post("/api/write", headers=read_only).status_code == 403
    assert api.post("/api/write", headers=writer).json == {"written_by": "user-1"}


def test_example_api_takes_a_bound_token_only_with_its_proof(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    api = create_resource_app(verifier).test_client()
    key = DPoPKey()
    bound = mint(signing_key, issuer.url, clock(), cnf={"jkt": key.jkt})
    proof = key.proof("GET", "http://localhost/api/hello", issued_at=clock(), access_token=bound)

    with_proof = api.get("/api/hello", headers={"Authorization": f"DPoP {bound}", "DPoP": proof})
    as_bearer = api.get("/api/hello", headers={"Authorization": f"Bearer {bound}"})

    assert with_proof.status_code == 200
    assert as_bearer.status_code == 401
    assert as_bearer.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token", ')
