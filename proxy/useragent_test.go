package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestUserAgentReplacesTheCallersOnACopy(t *testing.T) {
	t.Parallel()
	seen := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Get("User-Agent") }))
	t.Cleanup(srv.Close)
	rt := UserAgent("ecr-mirror/v1.2.0 (linux/amd64; go1.26.8)", http.DefaultTransport)
	for _, tt := range []struct{ name, callers string }{
		{name: "none set", callers: ""},
		{name: "a client's", callers: "containerd/2.0"},
		{name: "already the mirror's", callers: "ecr-mirror/v1.2.0 (linux/amd64; go1.26.8)"},
	} {
		req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tt.callers != "" {
			req.Header.Set("User-Agent", tt.callers)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := <-seen; got != "ecr-mirror/v1.2.0 (linux/amd64; go1.26.8)" {
			t.Errorf("%s: upstream saw User-Agent %q", tt.name, got)
		}
		if got := req.Header.Get("User-Agent"); got != tt.callers {
			t.Errorf("%s: the caller's request now says %q, want it unchanged (%q)", tt.name, got, tt.callers)
		}
	}
}
