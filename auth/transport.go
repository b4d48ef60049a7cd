package auth

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxErrorBody caps how much of a rejection body is read to classify it
// (ggcr's transport error limit).
const maxErrorBody = 64 << 10

// CredentialsError is returned by the Transport and the RegistryTransport
// when the mirror could not obtain credentials for the registry (an ECR
// token, a registry token from its realm, a Docker config login); Err is
// the cause (it never contains a secret). Proxies typically answer 502 or 503 for it; find it
// with errors.As.
type CredentialsError struct {
	// Host is the registry host the credentials were for.
	Host string
	// Err is why no token could be had.
	Err error
}

// Error implements error.
func (e *CredentialsError) Error() string {
	return "auth: the mirror could not obtain credentials for " + e.Host + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *CredentialsError) Unwrap() error { return e.Err }

// Transport returns an http.RoundTripper that sends
// "Authorization: Basic <token>" on requests whose URL host (host[:port] as
// written in the URL, compared case-insensitively) equals registryHost, and
// passes every other request to base untouched. registryHost may also be
// given as a URL ("https://host"), as in ECR's proxyEndpoint. A nil base
// means http.DefaultTransport.
//
// The header is added to a clone of each request, never to the caller's:
// ECR redirects blob GETs to presigned S3 URLs, S3 refuses requests that
// also carry Authorization, and an http.Client following that redirect
// copies the original request's headers and calls this same transport.
//
// When the registry answers 401, or 403 with an ECR DENIED error (how ECR
// reports an expired token), the transport calls Refresh with the token it
// sent and, if the request has no body or has GetBody, retries once with the
// new token; the second answer is returned whatever it is. A DENIED whose
// message says the principal "is not authorized to perform" an action is an
// IAM denial that a new token cannot fix, so it is returned without a
// refresh. A non-replayable request still triggers the refresh (for the
// requests after it) but gets the first answer. At most 64 KiB of a 403 body
// is read to decide; the response returned carries an equivalent body.
//
// If no token can be had, RoundTrip returns a *CredentialsError.
func (s *Source) Transport(registryHost string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	host := registryHost
	if strings.Contains(host, "://") {
		if u, err := url.Parse(host); err == nil {
			host = u.Host
		}
	}
	return &transport{src: s, host: host, base: base}
}

type transport struct {
	src  *Source
	host string
	base http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || t.host == "" || !strings.EqualFold(req.URL.Host, t.host) {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	tok, err := t.src.Token(ctx)
	if err != nil {
		// RoundTrip must close the body even when it fails.
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, &CredentialsError{Host: t.host, Err: err}
	}
	resp, err := t.base.RoundTrip(withToken(req, tok))
	if err != nil || !t.rejectsToken(req, resp, tok) {
		return resp, err
	}

	t.src.log.Info("ECR registry rejected the token; refreshing",
		"host", t.host, "method", req.Method, "status", resp.StatusCode)
	fresh, err := t.src.Refresh(ctx, tok)
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	switch {
	case !replayable:
		// The body is spent; the caller gets the answer, the next request
		// gets the new token (if the refresh worked).
		return resp, nil
	case err != nil:
		drain(resp)
		return nil, &CredentialsError{Host: t.host, Err: err}
	}

	retry := withToken(req, fresh)
	if req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		retry.Body = body
	}
	drain(resp)
	resp, err = t.base.RoundTrip(retry)
	if err == nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
		t.src.log.Warn("ECR registry rejected a freshly fetched token; check the principal's ECR permissions and registry account",
			"host", t.host, "method", req.Method, "status", resp.StatusCode)
	}
	return resp, err
}

// CloseIdleConnections passes through to base, so that
// http.Client.CloseIdleConnections keeps working.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// withToken returns a clone of req carrying tok; req itself is untouched.
func withToken(req *http.Request, tok Token) *http.Request {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Basic "+tok.Basic())
	return r
}

// rejectsToken reports whether resp says tok was refused: 401, or 403
// with an ECR DENIED error other than an IAM authorization failure. A 403
// to a HEAD has no body to tell which: the same request is asked with GET,
// whose error body says.
func (t *transport) rejectsToken(req *http.Request, resp *http.Response, tok Token) bool {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return true
	case http.StatusForbidden:
	default:
		return false
	}
	if req.Method != http.MethodHead {
		return deniesToken(resp)
	}
	probe := withToken(req, tok)
	probe.Method, probe.Body, probe.GetBody, probe.ContentLength = http.MethodGet, nil, nil, 0
	presp, err := t.base.RoundTrip(probe)
	if err != nil {
		return false
	}
	defer drain(presp)
	return presp.StatusCode == http.StatusUnauthorized ||
		presp.StatusCode == http.StatusForbidden && deniesToken(presp)
}

// deniesToken reports whether a 403 carries an ECR DENIED error other
// than an IAM authorization failure. It reads up to maxErrorBody bytes and
// puts back an equivalent body.
func deniesToken(resp *http.Response) bool {
	if resp.Body == nil || resp.Body == http.NoBody {
		return false
	}
	prefix, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body = &replayBody{Reader: io.MultiReader(bytes.NewReader(prefix), resp.Body), Closer: resp.Body}
	if err != nil {
		return false
	}
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(prefix, &body) != nil {
		return false
	}
	for _, e := range body.Errors {
		if e.Code == "DENIED" && !strings.Contains(strings.ToLower(e.Message), "not authorized to perform") {
			return true
		}
	}
	return false
}

// replayBody is a response body whose start was already read: the read
// prefix followed by the rest, closing the original.
type replayBody struct {
	io.Reader
	io.Closer
}

// drain discards a bounded amount of a response we will not return, so the
// connection can be reused, and closes it.
func drain(resp *http.Response) {
	if resp.Body == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxErrorBody)
	_ = resp.Body.Close()
}
