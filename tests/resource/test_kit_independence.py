"""The kit must work in a resource server that has none of the server's code or dependencies."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import authserver.resource

KIT = Path(authserver.resource.__file__).parent
ALLOWED_THIRD_PARTY = {"joserfc"}
FLASK_MODULE = "flask.py"

STANDALONE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {"authserver", "sqlalchemy", "authlib", "requests", "psycopg", "alembic",
               "argon2", "flask_wtf", "gunicorn"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("blocked: " + name)
            return None

    sys.meta_path.insert(0, Block())

    import json
    from joserfc import jws, jwt
    from joserfc.jwk import ECKey
    import resource_kit
    import resource_kit.dpop
    import resource_kit.flask

    key = ECKey.generate_key("P-256", private=True)
    jwk = dict(key.as_dict(private=False), kid="k1", alg="ES256")
    documents = {
        "https://issuer.test/.well-known/oauth-authorization-server":
            {"issuer": "https://issuer.test", "jwks_uri": "https://issuer.test/jwks"},
        "https://issuer.test/jwks": {"keys": [jwk]},
    }

    def http(method, url, headers, body):
        return 200, {}, json.dumps(documents[url]).encode()

    now = 1_750_000_000
    token = jwt.encode(
        {"typ": "at+jwt", "alg": "ES256", "kid": "k1"},
        {"iss": "https://issuer.test", "aud": "api", "sub": "u1", "client_id": "c1",
         "jti": "j1", "iat": now, "exp": now + 60},
        key,
        ["ES256"],
    )
    verifier = resource_kit.TokenVerifier("https://issuer.test", "api", http=http,
                                          clock=lambda: now)
    print(verifier.verify(token).subject)

    # A DPoP-bound token and its proof (RFC 9449), made with joserfc alone.
    client_key = ECKey.generate_key("P-256", private=True)
    bound = jwt.encode(
        {"typ": "at+jwt", "alg": "ES256", "kid": "k1"},
        {"iss": "https://issuer.test", "aud": "api", "sub": "u2", "client_id": "c1",
         "jti": "j2", "iat": now, "exp": now + 60, "cnf": {"jkt": client_key.thumbprint()}},
        key,
        ["ES256"],
    )
    ath = resource_kit.dpop.access_token_hash(bound)
    proof = jws.serialize_compact(
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": client_key.as_dict(private=False)},
        json.dumps({"jti": "p1", "htm": "GET", "htu": "https://api.test/x", "iat": now,
                    "ath": ath}),
        client_key,
        ["ES256"],
    )
    verified = verifier.verify_dpop(bound, proof, method="GET", url="https://api.test/x")
    print(verified.subject, verified.dpop_jkt == client_key.thumbprint())
    print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """
)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import statement in the file."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_kit_imports_only_itself_the_standard_library_joserfc_and_flask() -> None:
    for path in sorted(KIT.glob("*.py")):
        for module, level in _imports(path):
            if level > 0:
                continue  # the kit's own modules, imported relatively
            top = module.split(".")[0]
            allowed = top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY
            if path.name == FLASK_MODULE:
                allowed = allowed or top == "flask"
            assert allowed, f"{path.name} imports {module}"


def test_kit_copied_out_of_authserver_verifies_a_token_without_server_packages(
    tmp_path: Path,
) -> None:
    shutil.copytree(KIT, tmp_path / "resource_kit", ignore=shutil.ignore_patterns("__pycache__"))

    result = subprocess.run(
        [sys.executable, "-c", STANDALONE_SCRIPT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["u1", "u2 True", "[]"]


def test_importing_the_kit_from_the_package_loads_none_of_the_servers_dependencies() -> None:
    script = (
        "import sys, authserver.resource, authserver.resource.flask\n"
        "loaded = [m for m in ('sqlalchemy', 'authlib', 'argon2', 'flask_wtf', 'psycopg',"
        " 'alembic') if m in sys.modules]\n"
        "print(','.join(loaded) or 'none')\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == "none"
