package fakeecr

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// bearerStore remembers the registry tokens the Bearer token endpoint
// issued, with their scopes and expiry (Options.Bearer).
type bearerStore struct {
	mu     sync.Mutex
	grants map[string]bearerGrant // token → grant
}

type bearerGrant struct {
	scopes []string
	expiry time.Time
}

// serveBearerToken serves GET /token, the realm of Options.Bearer: a token
// for the scope parameters asked, to anonymous requests or, with
// Options.BearerLogin, only to that Basic login (401 otherwise).
func (s *Server) serveBearerToken(w http.ResponseWriter, r *http.Request) {
	s.ctr.tokenRequests.Add(1)
	if want := s.opts.BearerLogin; want != "" {
		user, pass, ok := r.BasicAuth()
		if !ok || user+":"+pass != want {
			w.Header().Set("WWW-Authenticate", `Basic realm="fakeecr token"`)
			writeOCIError(w, http.StatusUnauthorized, codeUnauthorized, "incorrect username or password")
			return
		}
	}
	raw := make([]byte, 24)
	_, _ = rand.Read(raw) // never fails (crypto/rand documents it)
	tok := "fakeecr-bearer-" + hex.EncodeToString(raw)
	now := s.opts.Now()
	s.bearer.mu.Lock()
	if s.bearer.grants == nil {
		s.bearer.grants = map[string]bearerGrant{}
	}
	s.bearer.grants[tok] = bearerGrant{scopes: r.URL.Query()["scope"], expiry: now.Add(s.opts.TokenTTL)}
	s.bearer.mu.Unlock()
	s.ctr.tokensIssued.Add(1)
	body, _ := json.Marshal(map[string]any{ // plain strings and numbers: cannot fail
		"token": tok, "access_token": tok,
		"expires_in": int64(s.opts.TokenTTL / time.Second), "issued_at": now.UTC().Format(time.RFC3339),
	})
	writeJSON(w, http.StatusOK, body)
}

// bearerAllows checks the request's Bearer token against the scope its
// path and method need; without one it answers 401 with the challenge
// naming the realm, service and scope, and returns false.
func (s *Server) bearerAllows(w http.ResponseWriter, r *http.Request) bool {
	scope := bearerScope(r)
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && s.bearerGrants(tok, scope) {
		return true
	}
	s.ctr.unauthorized.Add(1)
	challenge := fmt.Sprintf(`Bearer realm="%s/token",service="%s"`, s.regURL, s.Host())
	if scope != "" {
		challenge += `,scope="` + scope + `"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeOCIError(w, http.StatusUnauthorized, codeUnauthorized, "authentication required")
	return false
}

// bearerGrants reports whether tok is unexpired and covers scope ("" is
// covered by any token). A pull,push grant covers a pull.
func (s *Server) bearerGrants(tok, scope string) bool {
	s.bearer.mu.Lock()
	g, ok := s.bearer.grants[tok]
	s.bearer.mu.Unlock()
	if !ok || !s.opts.Now().Before(g.expiry) {
		return false
	}
	if scope == "" || slices.Contains(g.scopes, scope) {
		return true
	}
	pull, isPull := strings.CutSuffix(scope, ":pull")
	return isPull && slices.Contains(g.scopes, pull+":pull,push")
}

// bearerScope is the scope a registry request needs:
// "repository:<name>:pull", ":pull,push" for writes, "" for /v2/ itself.
func bearerScope(r *http.Request) string {
	rest, _ := strings.CutPrefix(r.URL.Path, "/v2/")
	end := -1
	for _, sep := range [...]string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		end = max(end, strings.LastIndex(rest, sep))
	}
	if end <= 0 {
		return ""
	}
	actions := "pull"
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		actions = "pull,push"
	}
	return "repository:" + rest[:end] + ":" + actions
}
