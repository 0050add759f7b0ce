// A resource server in Node that accepts authserver's access tokens, with the `jose` package.
//
// GET /api/hello needs any valid access token; POST /api/write needs the "write" scope.
// Tokens are verified offline (RFC 9068 §4) against the issuer's JWKS, found through its
// metadata (RFC 8414); with feed credentials, the issuer's revocation feed is polled too, so
// revoked tokens are refused before they expire. docs/INTEGRATION.md explains each check.
//
//   npm ci                      # in this folder: installs the pinned jose
//   node server.mjs             # listens on http://127.0.0.1:8002
//
// Settings, from the environment:
//   RS_ISSUER          the issuer (default http://127.0.0.1:8000, what `make run` serves)
//   RS_AUDIENCE        this API's audience (default: the issuer, what `make run` puts in aud)
//   RS_PORT            the port on 127.0.0.1 (default 8002)
//   RS_LISTEN_FD       serve on this already-listening socket instead (the tests use it)
//   RS_FEED_CLIENT_ID, RS_FEED_CLIENT_SECRET
//                      a client registered as this API's resource server
//                      (`authserver clients create ... --serves AUDIENCE`): with both set,
//                      the revocation feed is followed
//   RS_POLL_INTERVAL   seconds between feed polls (default 5): the longest a revoked token
//                      is still accepted
//   RS_JWKS_COOLDOWN   at least this many seconds between two JWKS fetches (default 30)

import http from 'node:http';
import process from 'node:process';

import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify } from 'jose';

const env = process.env;
const ISSUER = env.RS_ISSUER ?? 'http://127.0.0.1:8000';
const AUDIENCE = env.RS_AUDIENCE ?? ISSUER;
// authserver signs with ES256 (RS256 when configured so). Never a symmetric algorithm: a
// resource server holds no shared secret (RFC 8725 §3.1).
const ALGORITHMS = ['ES256', 'RS256'];
const LEEWAY_SECONDS = 30;
// authserver's tokens are well under 1 KiB; anything this large is refused unread.
const MAX_TOKEN_LENGTH = 8 * 1024;
const HTTP_TIMEOUT_MS = 10_000;

class InvalidToken extends Error {}
// The token could not be checked (the JWKS could not be had): 503, not the client's fault.
class Unavailable extends Error {}
// What jose throws when the JWKS cannot be fetched or read, rather than about the token.
const JWKS_UNAVAILABLE = new Set(['ERR_JWKS_TIMEOUT', 'ERR_JWKS_INVALID', 'ERR_JOSE_GENERIC']);

function number(name, fallback) {
  const value = Number(env[name] ?? fallback);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a number, not ${env[name]}`);
  }
  return value;
}

// RFC 8414 §3: the metadata lives at a well-known path under the issuer, and its `issuer`
// must be the one asked for (§3.3), or whoever serves it could substitute their own keys.
async function discover(issuer) {
  const url = issuer.replace(/\/$/, '') + '/.well-known/oauth-authorization-server';
  const response = await fetch(url, {
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  const metadata = await response.json();
  if (metadata.issuer !== issuer) throw new Error(`${url} names another issuer`);
  return metadata;
}

// RFC 6749 §2.3.1: each part form-urlencoded, then HTTP Basic.
function basicAuthorization(clientId, clientSecret) {
  const encode = (text) => new URLSearchParams({ x: text }).toString().slice(2);
  return 'Basic ' + Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString('base64');
}

// The issuer's revocation feed: GET /oauth/revocations?since=<cursor>, HTTP Basic, 304 when
// nothing is new. Every entry names what a token must not carry, until its expires_at.
class RevocationFeed {
  constructor(url, authorization) {
    this.url = url;
    this.authorization = authorization;
    this.cursor = null;
    this.etag = null;
    this.sids = new Map(); // refresh family (the token's sid) -> expires_at
    this.jtis = new Map(); // one access token -> expires_at
    this.kids = new Map(); // a withdrawn signing key -> expires_at
    this.users = new Map(); // sub -> {notBefore, expiresAt}: tokens issued before are revoked
    this.clients = new Map(); // client_id -> {notBefore, expiresAt}
    this.lastSuccess = null;
  }

  async poll() {
    const url = new URL(this.url);
    if (this.cursor !== null) url.searchParams.set('since', String(this.cursor));
    const headers = { authorization: this.authorization, accept: 'application/json' };
    if (this.etag !== null) headers['if-none-match'] = this.etag;
    const response = await fetch(url, { headers, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    const now = Date.now() / 1000;
    if (response.status === 304) {
      this.prune(now);
      this.lastSuccess = now;
      return;
    }
    if (response.status !== 200) throw new Error(`GET ${this.url}: HTTP ${response.status}`);
    const page = await response.json();
    if (!Number.isInteger(page.cursor) || !Array.isArray(page.entries)) {
      throw new Error('the revocation feed answered without a cursor and entries');
    }
    for (const entry of page.entries) this.merge(entry);
    // A cursor lower than ours: the issuer started over (a restore). A cursor past 2^53 would
    // not survive a JavaScript number. Either way, ask for the full listing next time.
    const wentBack = this.cursor !== null && page.cursor < this.cursor;
    if (wentBack || !Number.isSafeInteger(page.cursor)) {
      this.cursor = null;
      this.etag = null;
    } else {
      this.cursor = page.cursor;
      this.etag = response.headers.get('etag');
    }
    this.prune(now);
    this.lastSuccess = now;
  }

  // An entry may arrive twice (delivery is at least once): keeping the later expiry and the
  // later not_before makes a repeat change nothing.
  merge(entry) {
    if (entry === null || typeof entry !== 'object') return;
    const { type, value, expires_at: expiresAt, not_before: notBefore } = entry;
    if (typeof value !== 'string' || typeof expiresAt !== 'number') return;
    const single = { sid: this.sids, jti: this.jtis, kid: this.kids }[type];
    if (single) {
      single.set(value, Math.max(expiresAt, single.get(value) ?? -Infinity));
      return;
    }
    const cutoffs = { sub: this.users, client: this.clients }[type];
    if (!cutoffs || typeof notBefore !== 'number') return; // a type for a newer verifier
    const known = cutoffs.get(value);
    cutoffs.set(value, {
      notBefore: Math.max(notBefore, known?.notBefore ?? -Infinity),
      expiresAt: Math.max(expiresAt, known?.expiresAt ?? -Infinity),
    });
  }

  prune(now) {
    for (const map of [this.sids, this.jtis, this.kids]) {
      for (const [value, expiresAt] of map) if (expiresAt <= now) map.delete(value);
    }
    for (const map of [this.users, this.clients]) {
      for (const [value, cutoff] of map) if (cutoff.expiresAt <= now) map.delete(value);
    }
  }

  keyWithdrawn(kid) {
    return (this.kids.get(kid) ?? -Infinity) > Date.now() / 1000;
  }

  revokes(claims) {
    const now = Date.now() / 1000;
    if (typeof claims.sid === 'string' && (this.sids.get(claims.sid) ?? -Infinity) > now) {
      return true;
    }
    if ((this.jtis.get(claims.jti) ?? -Infinity) > now) return true;
    for (const [cutoffs, key] of [
      [this.users, claims.sub],
      [this.clients, claims.client_id],
    ]) {
      const cutoff = cutoffs.get(key);
      if (cutoff && cutoff.expiresAt > now && claims.iat < cutoff.notBefore) return true;
    }
    return false;
  }

  // Poll now, then every interval; a failed poll keeps the last state and tries again.
  async start(intervalSeconds) {
    const loop = async () => {
      try {
        await this.poll();
      } catch (error) {
        console.error(`revocation feed poll failed (${error.message}); keeping the last state`);
      }
      setTimeout(loop, intervalSeconds * 1000).unref();
    };
    await loop();
  }
}

function makeVerifier(jwks, feed) {
  return async function verify(token) {
    if (token.length > MAX_TOKEN_LENGTH) throw new InvalidToken('The token is too large.');
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new InvalidToken('The token is not a signed JWT.');
    }
    // Before any key is looked up: a withdrawn key's tokens are refused even while the
    // JWKS cache still holds the key.
    if (typeof header.kid !== 'string' || (feed && feed.keyWithdrawn(header.kid))) {
      throw new InvalidToken('The token names no usable signing key.');
    }
    let payload;
    try {
      // jose takes the key whose kid and alg match the header from the JWKS (refetching,
      // at most once per cooldown, for an unknown kid), and checks the alg allow-list,
      // typ (RFC 9068 §4: "at+jwt", so an ID token cannot pass), iss, aud, exp and nbf.
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: ISSUER,
        audience: AUDIENCE,
        algorithms: ALGORITHMS,
        typ: 'at+jwt',
        clockTolerance: LEEWAY_SECONDS,
        requiredClaims: ['exp', 'iat', 'sub', 'jti', 'client_id'],
      }));
    } catch (error) {
      if (!(error instanceof errors.JOSEError) || JWKS_UNAVAILABLE.has(error.code)) {
        console.error(`access token not checked: ${error.message}`);
        throw new Unavailable();
      }
      throw new InvalidToken(`The access token is invalid (${error.code}).`);
    }
    // jose checks iat's type; a token issued in our future means a wrong clock or a bad token.
    if (payload.iat > Date.now() / 1000 + LEEWAY_SECONDS) {
      throw new InvalidToken('The access token was issued in the future.');
    }
    // RFC 9449 §7.1: a token bound to a key (cnf.jkt, DPoP) is refused as a bearer token;
    // this example takes bearer tokens only.
    if (payload.cnf !== undefined) {
      throw new InvalidToken('The access token is bound to a DPoP key; bearer tokens only here.');
    }
    if (feed && feed.revokes(payload)) throw new InvalidToken('The access token was revoked.');
    return payload;
  };
}

// RFC 6750 §3: what a refusal says.
function refuse(response, status, challenge, error) {
  response.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'www-authenticate': challenge,
  });
  response.end(JSON.stringify(error ? { error } : {}));
}

function makeHandler(verify) {
  const routes = {
    'GET /api/hello': { scope: null },
    'POST /api/write': { scope: 'write' },
  };
  return async (request, response) => {
    const route = routes[`${request.method} ${new URL(request.url, 'http://x').pathname}`];
    if (!route) {
      response.writeHead(404, { 'content-type': 'application/json' });
      response.end('{"error":"not_found"}');
      return;
    }
    const match = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i.exec(request.headers.authorization ?? '');
    if (!match) {
      refuse(response, 401, 'Bearer', null);
      return;
    }
    let claims;
    try {
      claims = await verify(match[1]);
    } catch (error) {
      if (error instanceof Unavailable) {
        response.writeHead(503, {
          'content-type': 'application/json',
          'cache-control': 'no-store',
        });
        response.end('{"error":"temporarily_unavailable"}');
        return;
      }
      if (!(error instanceof InvalidToken)) throw error;
      const description = error.message.replace(/["\\]/g, '');
      refuse(
        response,
        401,
        `Bearer error="invalid_token", error_description="${description}"`,
        'invalid_token',
      );
      return;
    }
    const scopes = typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
    if (route.scope && !scopes.includes(route.scope)) {
      refuse(
        response,
        403,
        `Bearer error="insufficient_scope", scope="${route.scope}"`,
        'insufficient_scope',
      );
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(
      JSON.stringify(
        route.scope
          ? { written_by: claims.sub }
          : { hello: claims.sub, client_id: claims.client_id, scope: scopes.sort() },
      ),
    );
  };
}

async function main() {
  const metadata = await discover(ISSUER);
  const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri), {
    cooldownDuration: number('RS_JWKS_COOLDOWN', 30) * 1000,
    // authserver's JWKS may be cached for AUTHSERVER_JWKS_MAX_AGE (15 minutes by default).
    cacheMaxAge: 10 * 60 * 1000,
  });
  let feed = null;
  if (env.RS_FEED_CLIENT_ID && env.RS_FEED_CLIENT_SECRET) {
    const feedUrl = metadata.revocation_feed_endpoint ?? ISSUER + '/oauth/revocations';
    feed = new RevocationFeed(
      feedUrl,
      basicAuthorization(env.RS_FEED_CLIENT_ID, env.RS_FEED_CLIENT_SECRET),
    );
    // The first poll before the first request, so a revocation made before start counts.
    await feed.start(number('RS_POLL_INTERVAL', 5));
  }
  const handler = makeHandler(makeVerifier(jwks, feed));
  const server = http.createServer((request, response) => {
    handler(request, response).catch((error) => {
      console.error(`request failed: ${error.message}`);
      if (!response.headersSent) response.writeHead(500, { 'content-type': 'application/json' });
      response.end('{"error":"server_error"}');
    });
  });
  const fd = env.RS_LISTEN_FD;
  const where =
    fd !== undefined ? { fd: Number(fd) } : { port: number('RS_PORT', 8002), host: '127.0.0.1' };
  server.listen(where, () => {
    const { port } = server.address();
    console.log(`resource server on http://127.0.0.1:${port}`);
  });
  process.on('SIGTERM', () => process.exit(0));
}

main().catch((error) => {
  console.error(`resource server could not start: ${error.message}`);
  process.exit(1);
});
