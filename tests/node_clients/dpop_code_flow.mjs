// A public client built on oauth4webapi (a maintained RFC 9449 implementation nobody on the
// authserver project wrote) runs the authorization code flow with PKCE and DPoP against a
// live authserver. tests/flows/test_dpop_oauth4webapi.py drives it:
//
//   node dpop_code_flow.mjs ISSUER CLIENT_ID REDIRECT_URI [ALGORITHM [bind-code | push]]
//
// ALGORITHM is the JWS algorithm of the client's DPoP key (ES256 unless given). bind-code
// binds the authorization code to that key too (RFC 9449 §10, the dpop_jkt parameter); push
// sends the authorization request to the pushed authorization request endpoint (RFC 9126)
// with a DPoP proof, which binds the code to the proof's key (RFC 9449 §10.1).
// 1. It prints one JSON line {"authorization_url": ...} and reads one line from stdin: the URL
//    the browser was redirected to (the test signs the user in and consents over HTTP).
// 2. It redeems the code, refreshes, calls userinfo, all with DPoP proofs made by the library
//    (retrying once on use_dpop_nonce, as the library's documentation shows), tries what must
//    be refused, and prints one JSON line: what it saw. No token is ever printed.
//
// Any unexpected answer ends it with a message on stderr and exit code 1.

import * as oauth from 'oauth4webapi'
import { createInterface } from 'node:readline'

const [issuerText, clientId, redirectUri, algorithm = 'ES256', binding] = process.argv.slice(2)
const bindings = [undefined, 'bind-code', 'push']
if (!issuerText || !clientId || !redirectUri || !bindings.includes(binding)) {
  console.error(
    'usage: node dpop_code_flow.mjs ISSUER CLIENT_ID REDIRECT_URI [ALGORITHM [bind-code | push]]',
  )
  process.exit(2)
}
const issuer = new URL(issuerText)
// The test's server listens on loopback over plain HTTP.
const insecure = { [oauth.allowInsecureRequests]: true }

const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure }),
)
const client = { client_id: clientId, token_endpoint_auth_method: 'none' }
const clientAuth = oauth.None()

// The client's DPoP key, made and kept by WebCrypto; only its public half leaves the process.
const keyPair = await oauth.generateKeyPair(algorithm)
const DPoP = oauth.DPoP(client, keyPair)

function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'))
}

// Sends a request made by `send` and reads its answer with `read`; when the server asks for a
// DPoP nonce, the handle has cached it from the answer and the request is made once more.
async function withNonceRetry(send, read) {
  let retries = 0
  for (;;) {
    const response = await send()
    try {
      return { result: await read(response), nonceRetries: retries }
    } catch (err) {
      if (retries === 0 && oauth.isDPoPNonceError(err)) {
        retries += 1
        continue
      }
      throw err
    }
  }
}

function describeTokens(tokens, nonceRetries) {
  const access = claimsOf(tokens.access_token)
  return {
    token_type: tokens.token_type,
    cnf_jkt: access.cnf?.jkt ?? null,
    has_refresh_token: typeof tokens.refresh_token === 'string',
    nonce_retries: nonceRetries,
  }
}

// What became of a token request that may be refused: `describe` of its result, or the
// refusal as the library read it. Either way the report says what the server did.
async function outcome(promise, describe) {
  try {
    return describe(await promise)
  } catch (err) {
    if (err instanceof oauth.ResponseBodyError) {
      return { refused: { status: err.status, error: err.error } }
    }
    throw err
  }
}

// The one line the test sends; stdin is then let go, so that nothing keeps the process alive.
const firstLine = () =>
  new Promise((resolve, reject) => {
    const lines = createInterface({ input: process.stdin })
    lines.once('line', (line) => {
      resolve(line)
      lines.close()
      process.stdin.destroy()
    })
    lines.once('close', () => reject(new Error('stdin closed before the redirect URL came')))
  })

// -- the authorization request --------------------------------------------------------------
const codeVerifier = oauth.generateRandomCodeVerifier()
const state = oauth.generateRandomState()
const nonce = oauth.generateRandomNonce()
const authorizationRequest = new URLSearchParams({
  response_type: 'code',
  client_id: clientId,
  redirect_uri: redirectUri,
  scope: 'openid email offline_access',
  state,
  nonce,
  code_challenge: await oauth.calculatePKCECodeChallenge(codeVerifier),
  code_challenge_method: 'S256',
  ...(binding === 'bind-code' ? { dpop_jkt: await DPoP.calculateThumbprint() } : {}),
})
let pushed = null
if (binding === 'push') {
  pushed = await withNonceRetry(
    () =>
      oauth.pushedAuthorizationRequest(as, client, clientAuth, authorizationRequest, {
        DPoP,
        ...insecure,
      }),
    (response) => oauth.processPushedAuthorizationResponse(as, client, response),
  )
}
const authorizationUrl = new URL(as.authorization_endpoint)
authorizationUrl.search = (
  pushed
    ? new URLSearchParams({ client_id: clientId, request_uri: pushed.result.request_uri })
    : authorizationRequest
).toString()
process.stdout.write(JSON.stringify({ authorization_url: authorizationUrl.href }) + '\n')

const callback = oauth.validateAuthResponse(as, client, new URL(await firstLine()), state)

// -- the code, redeemed with a proof --------------------------------------------------------
const code = await withNonceRetry(
  () =>
    oauth.authorizationCodeGrantRequest(
      as,
      client,
      clientAuth,
      callback,
      redirectUri,
      codeVerifier,
      { DPoP, ...insecure },
    ),
  (response) =>
    oauth.processAuthorizationCodeResponse(as, client, response, { expectedNonce: nonce }),
)
const subject = oauth.getValidatedIdTokenClaims(code.result).sub

// -- a refresh, with a proof by the same key ------------------------------------------------
const refreshWith = (handle, token) =>
  withNonceRetry(
    () =>
      oauth.refreshTokenGrantRequest(as, client, clientAuth, token, { DPoP: handle, ...insecure }),
    (response) => oauth.processRefreshTokenResponse(as, client, response),
  )
const refreshed = await refreshWith(DPoP, code.result.refresh_token)
const refreshToken = refreshed.result.refresh_token

// -- userinfo, with a proof naming the access token ----------------------------------------
// A second handle on the same key starts with no nonce, so with server nonces on, userinfo's
// own use_dpop_nonce challenge (WWW-Authenticate: DPoP) is met and answered too.
const resourceDPoP = oauth.DPoP(client, keyPair)
const userinfo = await withNonceRetry(
  () =>
    oauth.userInfoRequest(as, client, refreshed.result.access_token, {
      DPoP: resourceDPoP,
      ...insecure,
    }),
  (response) => oauth.processUserInfoResponse(as, client, subject, response),
)

// -- what must be refused -------------------------------------------------------------------
// The DPoP-bound access token presented as a plain bearer token (RFC 9449 §7.1).
const asBearer = await fetch(as.userinfo_endpoint, {
  headers: { authorization: `Bearer ${refreshed.result.access_token}` },
})
await asBearer.body?.cancel()

// The refresh token without any proof: a plain request, as a thief without the key would send.
const withoutProof = await fetch(as.token_endpoint, {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
  body: new URLSearchParams({
    grant_type: 'refresh_token',
    refresh_token: refreshToken,
    client_id: clientId,
  }),
})
const withoutProofBody = await withoutProof.json()

// The refresh token with a proof by another key.
const otherKey = oauth.DPoP(client, await oauth.generateKeyPair(algorithm))
const withOtherKey = await outcome(refreshWith(otherKey, refreshToken), () => ({ accepted: true }))

// Neither refusal may cost the holder of the key anything: its next refresh must work.
const after = await outcome(refreshWith(DPoP, refreshToken), (next) =>
  describeTokens(next.result, next.nonceRetries),
)

process.stdout.write(
  JSON.stringify({
    library: 'oauth4webapi',
    thumbprint: await DPoP.calculateThumbprint(),
    public_jwk: await crypto.subtle.exportKey('jwk', keyPair.publicKey),
    subject,
    push: pushed && { nonce_retries: pushed.nonceRetries },
    code_exchange: describeTokens(code.result, code.nonceRetries),
    refresh: describeTokens(refreshed.result, refreshed.nonceRetries),
    userinfo: {
      sub: userinfo.result.sub,
      email: userinfo.result.email ?? null,
      nonce_retries: userinfo.nonceRetries,
    },
    bearer_userinfo: {
      status: asBearer.status,
      www_authenticate: asBearer.headers.get('www-authenticate'),
    },
    refresh_without_proof: { status: withoutProof.status, error: withoutProofBody.error ?? null },
    refresh_with_other_key: withOtherKey,
    refresh_after_refusals: after,
  }) + '\n',
)
