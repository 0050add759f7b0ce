package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// authserver's tokens are well under 1 KiB; anything this large is refused unread.
const maxTokenLength = 8 * 1024

// Three non-empty base64url segments (RFC 7515 §7.1): "alg":"none" has an empty signature.
var compactJWS = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)

// ErrInvalidToken is every refusal; the message says why, and never repeats the token.
var ErrInvalidToken = errors.New("invalid token")

func invalid(reason string) error { return fmt.Errorf("%w: %s", ErrInvalidToken, reason) }

// Claims are the RFC 9068 §2.2 claims this API reads.
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  audience `json:"aud"`
	ExpiresAt *float64 `json:"exp"`
	IssuedAt  *float64 `json:"iat"`
	NotBefore *float64 `json:"nbf"`
	JTI       string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	Scope     string   `json:"scope"`
	SessionID string   `json:"sid"`
	// RFC 9449 §6: present on a token bound to a DPoP key.
	Confirmation json.RawMessage `json:"cnf"`
}

// Scopes is the scope claim as a list.
func (c *Claims) Scopes() []string { return strings.Fields(c.Scope) }

// HasScope says whether the token carries scope.
func (c *Claims) HasScope(scope string) bool {
	for _, s := range c.Scopes() {
		if s == scope {
			return true
		}
	}
	return false
}

// audience is "aud": one string or an array of strings (RFC 7519 §4.1.3).
type audience []string

func (a *audience) UnmarshalJSON(data []byte) error {
	var one string
	if err := json.Unmarshal(data, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// Verifier checks access tokens from one issuer for one audience (RFC 9068 §4).
type Verifier struct {
	Issuer   string
	Audience string
	Keys     *KeySet
	Feed     *RevocationFeed // nil: no revocation feed
	Leeway   time.Duration
}

// Verify returns the token's claims, or an error wrapping ErrInvalidToken.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if len(token) > maxTokenLength {
		return nil, invalid("the token is too large")
	}
	if !compactJWS.MatchString(token) {
		return nil, invalid("the token is not a signed JWT")
	}
	parts := strings.Split(token, ".")
	var header struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Typ  string          `json:"typ"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return nil, invalid("the token's header is not a JSON object")
	}
	// RFC 9068 §4: typ must say access token, so an ID token (typ "JWT"), a logout token or
	// a security event token from the same issuer and keys cannot pass as one. Media types
	// compare case-insensitively (RFC 7515 §4.1.9).
	typ := strings.ToLower(header.Typ)
	if typ != "at+jwt" && typ != "application/at+jwt" {
		return nil, invalid("the token is not an access token (typ)")
	}
	if header.Crit != nil {
		return nil, invalid("the token has critical header extensions")
	}
	if header.Kid == "" {
		return nil, invalid("the token names no signing key")
	}
	// Before the key is looked up: a withdrawn key's tokens are refused even while the JWKS
	// cache still holds the key.
	if v.Feed != nil && v.Feed.KeyWithdrawn(header.Kid) {
		return nil, invalid("the token's signing key was withdrawn")
	}
	key, err := v.Keys.Key(header.Kid)
	if err != nil {
		return nil, err
	}
	// RFC 8725 §3.1: the algorithm is the key's, never the token's choice.
	if header.Alg != key.Algorithm {
		return nil, invalid("the token's algorithm does not match its key")
	}
	signature, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !key.Verify([]byte(parts[0]+"."+parts[1]), signature) {
		return nil, invalid("bad signature")
	}
	var claims Claims
	if err := decodeSegment(parts[1], &claims); err != nil {
		return nil, invalid("the token's claims are malformed")
	}
	if err := v.checkClaims(&claims); err != nil {
		return nil, err
	}
	if v.Feed != nil && v.Feed.Revokes(&claims) {
		return nil, invalid("the token was revoked")
	}
	return &claims, nil
}

func (v *Verifier) checkClaims(c *Claims) error {
	if c.Issuer != v.Issuer {
		return invalid("wrong issuer")
	}
	found := false
	for _, a := range c.Audience {
		found = found || a == v.Audience
	}
	if !found {
		return invalid("wrong audience")
	}
	now := float64(time.Now().Unix())
	leeway := v.Leeway.Seconds()
	if c.ExpiresAt == nil || c.IssuedAt == nil {
		return invalid("the token has no exp or iat")
	}
	// RFC 7519 §4.1.4: valid only while now is before exp.
	if now >= *c.ExpiresAt+leeway {
		return invalid("the token has expired")
	}
	if (c.NotBefore != nil && now+leeway < *c.NotBefore) || now+leeway < *c.IssuedAt {
		return invalid("the token is not valid yet")
	}
	if c.Subject == "" || c.JTI == "" || c.ClientID == "" {
		return invalid("the token lacks sub, jti or client_id")
	}
	// RFC 9449 §7.1: a token bound to a key is refused as a bearer token; this example takes
	// bearer tokens only.
	if len(c.Confirmation) > 0 {
		return invalid("the token is bound to a DPoP key; bearer tokens only here")
	}
	return nil
}

func decodeSegment(segment string, into any) error {
	raw, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		return err
	}
	decoder := json.NewDecoder(bytes.NewReader(raw))
	if err := decoder.Decode(into); err != nil {
		return err
	}
	if decoder.More() {
		return errors.New("trailing data")
	}
	return nil
}

// Key is one public key of the JWKS, with the one algorithm it verifies.
type Key struct {
	Algorithm string
	ec        *ecdsa.PublicKey
	rsa       *rsa.PublicKey
}

// Verify checks a signature made with the key's algorithm (RFC 7518 §3.3, §3.4).
func (k *Key) Verify(signingInput, signature []byte) bool {
	digest := sha256.Sum256(signingInput)
	switch k.Algorithm {
	case "ES256":
		// RFC 7518 §3.4: R and S, 32 bytes each, not ASN.1.
		if len(signature) != 64 {
			return false
		}
		r, s := new(big.Int).SetBytes(signature[:32]), new(big.Int).SetBytes(signature[32:])
		return ecdsa.Verify(k.ec, digest[:], r, s)
	case "RS256":
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, digest[:], signature) == nil
	}
	return false
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func bigInt(text string) (*big.Int, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(raw) == 0 {
		return nil, false
	}
	return new(big.Int).SetBytes(raw), true
}

// publicKey is the JWK as a key for its own "alg", or nil: authserver names the algorithm
// of every key it publishes, and a key without one is not used (RFC 8725 §3.1).
func (j *jwk) publicKey() *Key {
	if j.Use != "" && j.Use != "sig" {
		return nil
	}
	switch {
	case j.Alg == "ES256" && j.Kty == "EC" && j.Crv == "P-256":
		x, okX := bigInt(j.X)
		y, okY := bigInt(j.Y)
		if !okX || !okY || !elliptic.P256().IsOnCurve(x, y) {
			return nil
		}
		return &Key{Algorithm: j.Alg, ec: &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}}
	case j.Alg == "RS256" && j.Kty == "RSA":
		n, okN := bigInt(j.N)
		e, okE := bigInt(j.E)
		// RFC 7518 §3.3: 2048 bits or more.
		if !okN || !okE || n.BitLen() < 2048 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31 {
			return nil
		}
		return &Key{Algorithm: j.Alg, rsa: &rsa.PublicKey{N: n, E: int(e.Int64())}}
	}
	return nil
}

// KeySet is the issuer's JWKS, cached for as long as its Cache-Control says, refetched
// (conditionally, with its ETag) when stale or when a token names an unknown kid, at most
// once per cooldown whatever the reason: a flood of made-up kids costs the issuer one
// request per cooldown.
type KeySet struct {
	client      *http.Client
	url         string
	cooldown    time.Duration
	mu          sync.Mutex
	keys        map[string]*Key
	etag        string
	freshUntil  time.Time
	lastAttempt time.Time
}

// NewKeySet fetches nothing until the first token arrives.
func NewKeySet(client *http.Client, url string, cooldown time.Duration) *KeySet {
	return &KeySet{client: client, url: url, cooldown: cooldown}
}

// Key returns the key named kid.
func (s *KeySet) Key(kid string) (*Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil || time.Now().After(s.freshUntil) {
		s.refetch()
	}
	if key, ok := s.keys[kid]; ok {
		return key, nil
	}
	// Perhaps a rotation not seen yet: look once (within the cooldown), then decide.
	s.refetch()
	if key, ok := s.keys[kid]; ok {
		return key, nil
	}
	if s.keys == nil {
		return nil, errors.New("the issuer's signing keys could not be fetched")
	}
	return nil, invalid("unknown signing key")
}

func (s *KeySet) refetch() {
	now := time.Now()
	if now.Sub(s.lastAttempt) < s.cooldown {
		return
	}
	s.lastAttempt = now
	if err := s.fetch(now); err != nil {
		log.Printf("JWKS fetch failed (%v); keeping the cached keys", err)
	}
}

func (s *KeySet) fetch(now time.Time) error {
	request, err := http.NewRequest(http.MethodGet, s.url, nil)
	if err != nil {
		return err
	}
	request.Header.Set("Accept", "application/jwk-set+json, application/json")
	if s.keys != nil && s.etag != "" {
		request.Header.Set("If-None-Match", s.etag)
	}
	response, err := s.client.Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	maxAge := maxAgeOf(response.Header.Get("Cache-Control"))
	if response.StatusCode == http.StatusNotModified && s.keys != nil {
		s.freshUntil = now.Add(maxAge)
		return nil
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", s.url, response.StatusCode)
	}
	var document struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.NewDecoder(response.Body).Decode(&document); err != nil {
		return fmt.Errorf("GET %s: %w", s.url, err)
	}
	keys := map[string]*Key{}
	for i := range document.Keys {
		if key := document.Keys[i].publicKey(); key != nil && document.Keys[i].Kid != "" {
			keys[document.Keys[i].Kid] = key
		}
	}
	s.keys, s.etag, s.freshUntil = keys, response.Header.Get("ETag"), now.Add(maxAge)
	return nil
}

// maxAgeOf reads max-age from Cache-Control (RFC 9111 §5.2.2): 5 minutes when absent, at
// most a day.
func maxAgeOf(cacheControl string) time.Duration {
	maxAge := 5 * time.Minute
	for _, directive := range strings.Split(cacheControl, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(directive), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return 0
		case "max-age":
			if parsed, err := strconv.ParseUint(strings.Trim(value, `"`), 10, 32); err == nil {
				maxAge = time.Duration(parsed) * time.Second
			}
		}
	}
	if maxAge > 24*time.Hour {
		maxAge = 24 * time.Hour
	}
	return maxAge
}
