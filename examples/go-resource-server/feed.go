package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

type cutoff struct{ notBefore, expiresAt float64 }

// RevocationFeed follows the issuer's revocation feed: GET /oauth/revocations?since=<cursor>
// with HTTP Basic, 304 when nothing is new. Every entry names what a token must not carry,
// until its expires_at; delivery is at least once, so merging an entry twice changes nothing.
type RevocationFeed struct {
	client        *http.Client
	url           string
	authorization [2]string
	mu            sync.Mutex
	cursor        *uint64
	etag          string
	sids          map[string]float64 // refresh family (the token's sid) -> expires_at
	jtis          map[string]float64 // one access token -> expires_at
	kids          map[string]float64 // a withdrawn signing key -> expires_at
	users         map[string]cutoff  // sub: tokens issued before notBefore are revoked
	clients       map[string]cutoff  // client_id: likewise
}

// NewRevocationFeed polls nothing until Start.
func NewRevocationFeed(client *http.Client, feedURL, clientID, clientSecret string) *RevocationFeed {
	return &RevocationFeed{
		client: client, url: feedURL,
		// RFC 6749 §2.3.1: each part form-urlencoded before HTTP Basic.
		authorization: [2]string{url.QueryEscape(clientID), url.QueryEscape(clientSecret)},
		sids:          map[string]float64{}, jtis: map[string]float64{}, kids: map[string]float64{},
		users: map[string]cutoff{}, clients: map[string]cutoff{},
	}
}

// Start polls once now, then every interval; a failed poll keeps the last state.
func (f *RevocationFeed) Start(interval time.Duration) {
	pollLogged := func() {
		if err := f.Poll(); err != nil {
			log.Printf("revocation feed poll failed (%v); keeping the last state", err)
		}
	}
	pollLogged()
	go func() {
		for range time.Tick(interval) {
			pollLogged()
		}
	}()
}

type feedEntry struct {
	Type      string   `json:"type"`
	Value     *string  `json:"value"`
	ExpiresAt *float64 `json:"expires_at"`
	NotBefore *float64 `json:"not_before"`
}

// Poll fetches what changed since the last poll.
func (f *RevocationFeed) Poll() error {
	f.mu.Lock()
	target := f.url
	if f.cursor != nil {
		target += "?since=" + strconv.FormatUint(*f.cursor, 10)
	}
	etag := f.etag
	f.mu.Unlock()

	request, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	request.SetBasicAuth(f.authorization[0], f.authorization[1])
	request.Header.Set("Accept", "application/json")
	if etag != "" {
		request.Header.Set("If-None-Match", etag)
	}
	response, err := f.client.Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	now := float64(time.Now().Unix())
	f.mu.Lock()
	defer f.mu.Unlock()
	if response.StatusCode == http.StatusNotModified {
		f.prune(now)
		return nil
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", f.url, response.StatusCode)
	}
	var page struct {
		Cursor  *uint64     `json:"cursor"`
		Entries []feedEntry `json:"entries"`
	}
	if err := json.NewDecoder(response.Body).Decode(&page); err != nil || page.Cursor == nil {
		return fmt.Errorf("the revocation feed answered without a cursor and entries")
	}
	for _, entry := range page.Entries {
		f.merge(entry)
	}
	if f.cursor != nil && *page.Cursor < *f.cursor {
		// The issuer started over (a restore): ask for the full listing next time.
		f.cursor, f.etag = nil, ""
	} else {
		f.cursor, f.etag = page.Cursor, response.Header.Get("ETag")
	}
	f.prune(now)
	return nil
}

func later(a float64, b float64, known bool) float64 {
	if known && b > a {
		return b
	}
	return a
}

func (f *RevocationFeed) merge(e feedEntry) {
	if e.Value == nil || e.ExpiresAt == nil {
		return
	}
	single := map[string]map[string]float64{"sid": f.sids, "jti": f.jtis, "kid": f.kids}[e.Type]
	if single != nil {
		known, ok := single[*e.Value]
		single[*e.Value] = later(*e.ExpiresAt, known, ok)
		return
	}
	cutoffs := map[string]map[string]cutoff{"sub": f.users, "client": f.clients}[e.Type]
	if cutoffs == nil || e.NotBefore == nil {
		return // a type for a newer verifier: skipped
	}
	known, ok := cutoffs[*e.Value]
	cutoffs[*e.Value] = cutoff{
		notBefore: later(*e.NotBefore, known.notBefore, ok),
		expiresAt: later(*e.ExpiresAt, known.expiresAt, ok),
	}
}

func (f *RevocationFeed) prune(now float64) {
	for _, single := range []map[string]float64{f.sids, f.jtis, f.kids} {
		for value, expiresAt := range single {
			if expiresAt <= now {
				delete(single, value)
			}
		}
	}
	for _, cutoffs := range []map[string]cutoff{f.users, f.clients} {
		for value, c := range cutoffs {
			if c.expiresAt <= now {
				delete(cutoffs, value)
			}
		}
	}
}

func live(expiresAt float64, ok bool) bool {
	return ok && expiresAt > float64(time.Now().Unix())
}

// KeyWithdrawn says whether every token signed with kid is revoked.
func (f *RevocationFeed) KeyWithdrawn(kid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	expiresAt, ok := f.kids[kid]
	return live(expiresAt, ok)
}

// Revokes says whether the feed has revoked a token with these claims.
func (f *RevocationFeed) Revokes(c *Claims) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.SessionID != "" {
		if expiresAt, ok := f.sids[c.SessionID]; live(expiresAt, ok) {
			return true
		}
	}
	if expiresAt, ok := f.jtis[c.JTI]; live(expiresAt, ok) {
		return true
	}
	for _, check := range []struct {
		cutoffs map[string]cutoff
		key     string
	}{{f.users, c.Subject}, {f.clients, c.ClientID}} {
		if cut, ok := check.cutoffs[check.key]; live(cut.expiresAt, ok) && *c.IssuedAt < cut.notBefore {
			return true
		}
	}
	return false
}
