// A resource server in Go that accepts authserver's access tokens, with the standard library
// only (no module downloads).
//
// GET /api/hello needs any valid access token; POST /api/write needs the "write" scope.
// Tokens are verified offline (RFC 9068 §4) against the issuer's JWKS, found through its
// metadata (RFC 8414); with feed credentials, the issuer's revocation feed is polled too, so
// revoked tokens are refused before they expire. docs/INTEGRATION.md explains each check.
//
//	go run .                    # in this folder: listens on http://127.0.0.1:8003
//
// Settings, from the environment:
//
//	RS_ISSUER          the issuer (default http://127.0.0.1:8000, what `make run` serves)
//	RS_AUDIENCE        this API's audience (default: the issuer, what `make run` puts in aud)
//	RS_PORT            the port on 127.0.0.1 (default 8003)
//	RS_LISTEN_FD       serve on this already-listening socket instead (the tests use it)
//	RS_FEED_CLIENT_ID, RS_FEED_CLIENT_SECRET
//	                   a client registered as this API's resource server
//	                   (`authserver clients create ... --serves AUDIENCE`): with both set,
//	                   the revocation feed is followed
//	RS_POLL_INTERVAL   seconds between feed polls (default 5): the longest a revoked token
//	                   is still accepted
//	RS_JWKS_COOLDOWN   at least this many seconds between two JWKS fetches (default 30)
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

func main() {
	log.SetFlags(0)
	issuer := setting("RS_ISSUER", "http://127.0.0.1:8000")
	audience := setting("RS_AUDIENCE", issuer)
	client := &http.Client{Timeout: 10 * time.Second}

	metadata, err := discover(client, issuer)
	if err != nil {
		log.Fatalf("resource server could not start: %v", err)
	}
	keys := NewKeySet(client, metadata.JWKSURI, seconds("RS_JWKS_COOLDOWN", 30))
	verifier := &Verifier{Issuer: issuer, Audience: audience, Keys: keys, Leeway: 30 * time.Second}

	feedID, feedSecret := os.Getenv("RS_FEED_CLIENT_ID"), os.Getenv("RS_FEED_CLIENT_SECRET")
	if feedID != "" && feedSecret != "" {
		feedURL := metadata.RevocationFeed
		if feedURL == "" {
			feedURL = strings.TrimSuffix(issuer, "/") + "/oauth/revocations"
		}
		feed := NewRevocationFeed(client, feedURL, feedID, feedSecret)
		// The first poll before the first request, so a revocation made before start counts.
		interval := seconds("RS_POLL_INTERVAL", 5)
		if interval <= 0 {
			log.Fatal("RS_POLL_INTERVAL must be more than 0 seconds")
		}
		feed.Start(interval)
		verifier.Feed = feed
	}

	listener, err := listen()
	if err != nil {
		log.Fatalf("resource server could not listen: %v", err)
	}
	fmt.Printf("resource server on http://%s\n", listener.Addr())
	log.Fatal(http.Serve(listener, routes(verifier)))
}

func setting(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func seconds(name string, fallback float64) time.Duration {
	value := fallback
	if text := os.Getenv(name); text != "" {
		parsed, err := strconv.ParseFloat(text, 64)
		if err != nil || parsed < 0 {
			log.Fatalf("%s must be a number of seconds, not %q", name, text)
		}
		value = parsed
	}
	return time.Duration(value * float64(time.Second))
}

func listen() (net.Listener, error) {
	if fd := os.Getenv("RS_LISTEN_FD"); fd != "" {
		number, err := strconv.Atoi(fd)
		if err != nil {
			return nil, fmt.Errorf("RS_LISTEN_FD must be a file descriptor number: %w", err)
		}
		return net.FileListener(os.NewFile(uintptr(number), "listener"))
	}
	return net.Listen("tcp", "127.0.0.1:"+setting("RS_PORT", "8003"))
}

// Metadata is what this server reads of the issuer's metadata (RFC 8414 §2).
type Metadata struct {
	Issuer         string `json:"issuer"`
	JWKSURI        string `json:"jwks_uri"`
	RevocationFeed string `json:"revocation_feed_endpoint"`
}

// discover reads the metadata at the well-known path under the issuer; its issuer must be
// the one asked for (RFC 8414 §3.3), or whoever serves it could substitute their own keys.
func discover(client *http.Client, issuer string) (*Metadata, error) {
	url := strings.TrimSuffix(issuer, "/") + "/.well-known/oauth-authorization-server"
	response, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, response.StatusCode)
	}
	var metadata Metadata
	if err := json.NewDecoder(response.Body).Decode(&metadata); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if metadata.Issuer != issuer {
		return nil, fmt.Errorf("%s names another issuer", url)
	}
	if !strings.HasPrefix(metadata.JWKSURI, "https://") && !strings.HasPrefix(metadata.JWKSURI, "http://") {
		return nil, fmt.Errorf("%s has no usable jwks_uri", url)
	}
	return &metadata, nil
}

var bearer = regexp.MustCompile(`^(?i:Bearer) ([A-Za-z0-9\-._~+/]+=*)$`)

// routes is the API. Refusals follow RFC 6750 §3.
func routes(verifier *Verifier) http.Handler {
	mux := http.NewServeMux()
	protect := func(method, scope string, answer func(*Claims) any) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method != method {
				w.Header().Set("Allow", method)
				http.Error(w, `{"error":"method_not_allowed"}`, http.StatusMethodNotAllowed)
				return
			}
			match := bearer.FindStringSubmatch(r.Header.Get("Authorization"))
			if match == nil {
				refuse(w, http.StatusUnauthorized, "Bearer", "")
				return
			}
			claims, err := verifier.Verify(match[1])
			if err != nil && !errors.Is(err, ErrInvalidToken) {
				// The token could not be checked (no signing keys could be had): not the
				// client's fault, so not a 401.
				log.Printf("access token not checked: %v", err)
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Cache-Control", "no-store")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"error":"temporarily_unavailable"}`))
				return
			}
			if err != nil {
				description := strings.NewReplacer(`"`, "", `\`, "").Replace(err.Error())
				refuse(w, http.StatusUnauthorized,
					fmt.Sprintf(`Bearer error="invalid_token", error_description="%s"`, description),
					"invalid_token")
				return
			}
			if scope != "" && !claims.HasScope(scope) {
				refuse(w, http.StatusForbidden,
					fmt.Sprintf(`Bearer error="insufficient_scope", scope="%s"`, scope),
					"insufficient_scope")
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(answer(claims))
		}
	}
	mux.Handle("/api/hello", protect(http.MethodGet, "", func(c *Claims) any {
		return map[string]any{"hello": c.Subject, "client_id": c.ClientID, "scope": c.Scopes()}
	}))
	mux.Handle("/api/write", protect(http.MethodPost, "write", func(c *Claims) any {
		return map[string]any{"written_by": c.Subject}
	}))
	return mux
}

func refuse(w http.ResponseWriter, status int, challenge, code string) {
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if code == "" {
		_, _ = w.Write([]byte("{}"))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}
