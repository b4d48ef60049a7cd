package fakeecr

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// targetGetAuthorizationToken is the X-Amz-Target of ECR's GetAuthorizationToken.
const targetGetAuthorizationToken = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"

// tokenStore remembers every issued token and when it expires. Expired tokens
// stay known, so they get 403 DENIED rather than 401, as on ECR.
type tokenStore struct {
	mu     sync.RWMutex
	expiry map[string]time.Time // authorizationToken → expiry
}

// tokenState is what the registry makes of an Authorization header.
type tokenState int

const (
	tokenMissing tokenState = iota // no Basic credentials
	tokenUnknown
	tokenExpired
	tokenValid
)

// check classifies an Authorization header value at time now.
func (t *tokenStore) check(header string, now time.Time) tokenState {
	const prefix = "Basic "
	if len(header) <= len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return tokenMissing
	}
	t.mu.RLock()
	exp, ok := t.expiry[header[len(prefix):]]
	t.mu.RUnlock()
	switch {
	case !ok:
		return tokenUnknown
	case !now.Before(exp):
		return tokenExpired
	}
	return tokenValid
}

// IssueToken issues a token as GetAuthorizationToken would, without an HTTP
// round trip: base64 of "AWS:<password>", for "Authorization: Basic <token>".
// It is not counted as a token request.
func (s *Server) IssueToken() (token string, expiresAt time.Time) {
	n := s.opts.TokenPasswordLen
	raw := make([]byte, n*3/4+3)
	_, _ = rand.Read(raw) // never fails (crypto/rand documents it)
	password := base64.StdEncoding.EncodeToString(raw)[:n]
	token = base64.StdEncoding.EncodeToString([]byte("AWS:" + password))
	expiresAt = s.opts.Now().Add(s.opts.TokenTTL)
	s.tokens.mu.Lock()
	s.tokens.expiry[token] = expiresAt
	s.tokens.mu.Unlock()
	return token, expiresAt
}

// ExpireTokens makes every token issued so far expired, so the registry
// answers 403 DENIED to them. Tokens issued later are unaffected.
func (s *Server) ExpireTokens() {
	past := s.opts.Now().Add(-time.Second)
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	for tok := range s.tokens.expiry {
		s.tokens.expiry[tok] = past
	}
}

// awsError is the body of an AWS JSON 1.1 error.
type awsError struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

// serveToken serves the ECR API at POST /: GetAuthorizationToken only.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	s.ctr.tokenRequests.Add(1)
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
	// The signature is not checked: any SigV4 header will do, but AWS refuses
	// unsigned calls before looking at the operation.
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		writeAWSError(w, http.StatusBadRequest, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return
	}
	if target := r.Header.Get("X-Amz-Target"); target != targetGetAuthorizationToken {
		writeAWSError(w, http.StatusBadRequest, "UnknownOperationException",
			"fake ECR implements only GetAuthorizationToken, not "+strconv.Quote(target))
		return
	}
	if f, ok := s.faults.takeToken(); ok && s.applyFault(w, r, f, EndpointToken) {
		return
	}

	token, exp := s.IssueToken()
	s.ctr.tokensIssued.Add(1)
	type authorizationData struct {
		AuthorizationToken string      `json:"authorizationToken"`
		ExpiresAt          json.Number `json:"expiresAt"` // epoch seconds, as AWS sends it
		ProxyEndpoint      string      `json:"proxyEndpoint"`
	}
	body, err := json.Marshal(struct {
		AuthorizationData []authorizationData `json:"authorizationData"`
	}{[]authorizationData{{
		AuthorizationToken: token,
		ExpiresAt:          json.Number(strconv.FormatFloat(float64(exp.UnixMilli())/1000, 'f', 3, 64)),
		ProxyEndpoint:      s.regURL,
	}}})
	if err != nil { // cannot happen: the value is plain strings
		writeAWSError(w, http.StatusInternalServerError, "ServerException", err.Error())
		return
	}
	writeAWSJSON(w, http.StatusOK, body)
}

// writeAWSError writes an AWS JSON 1.1 error.
func writeAWSError(w http.ResponseWriter, status int, typ, msg string) {
	body, _ := json.Marshal(awsError{Type: typ, Message: msg}) // plain strings: cannot fail
	writeAWSJSON(w, status, body)
}

func writeAWSJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Amzn-Requestid", newRequestID())
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// newRequestID returns a random request id in the style of AWS's.
func newRequestID() string {
	return rand.Text()
}

// IssuedTokens returns every token issued so far, decoded ("AWS:<password>")
// and as issued (base64), so tests can check that none leaks.
func (s *Server) IssuedTokens() []string {
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	out := make([]string, 0, 2*len(s.tokens.expiry))
	for tok := range s.tokens.expiry {
		out = append(out, tok)
		if raw, err := base64.StdEncoding.DecodeString(tok); err == nil {
			_, password, _ := strings.Cut(string(raw), ":")
			out = append(out, password)
		}
	}
	return out
}
