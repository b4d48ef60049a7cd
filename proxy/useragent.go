package proxy

import "net/http"

// UserAgent returns an http.RoundTripper that sends every request
// through next with User-Agent ua, whatever the request carried: the
// registry API, the redirects it follows (ECR's to S3) and the token
// realms' requests alike, when it sits under the credentials. A
// client's own User-Agent is never passed upstream.
func UserAgent(ua string, next http.RoundTripper) http.RoundTripper {
	return userAgent{ua: ua, next: next}
}

type userAgent struct {
	ua   string
	next http.RoundTripper
}

// RoundTrip implements http.RoundTripper. It sets the header on a copy:
// a RoundTripper must not change the caller's request.
func (t userAgent) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("User-Agent") == t.ua {
		return t.next.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("User-Agent", t.ua)
	return t.next.RoundTrip(r)
}

// CloseIdleConnections passes through, so that
// http.Client.CloseIdleConnections keeps working.
func (t userAgent) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
