package observe

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// named answers its name, to tell which handler served a request.
type named string

func (n named) ServeHTTP(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, string(n)) }

// The operator's port serves the probes and the metrics, nothing else.
func TestOpsHandlerRoutes(t *testing.T) {
	t.Parallel()
	h := OpsHandler(named("probes"), named("metrics"))
	tests := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{path: "/healthz", wantStatus: 200, wantBody: "probes"},
		{path: "/readyz", wantStatus: 200, wantBody: "probes"},
		{path: "/metrics", wantStatus: 200, wantBody: "metrics"},
		{path: "/v2/", wantStatus: 404},
		{path: "/debug/pprof/", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.wantStatus || tt.wantBody != "" && rec.Body.String() != tt.wantBody {
				t.Errorf("GET %s: %d %q, want %d %q", tt.path, rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func TestPprofHandlerServesProfiles(t *testing.T) {
	t.Parallel()
	h := PprofHandler()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: %d", path, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /metrics on the pprof port: %d, want 404", rec.Code)
	}
}

// A registry listener serves the probes, and the metrics unless they
// have a port of their own, beside the API, which gets the rest.
func TestBesideAPIRoutes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		metrics http.Handler
		path    string
		want    string
	}{
		{name: "healthz", path: "/healthz", want: "probes"},
		{name: "readyz", path: "/readyz", want: "probes"},
		{name: "metrics here", metrics: named("metrics"), path: "/metrics", want: "metrics"},
		{name: "metrics elsewhere", path: "/metrics", want: "api"},
		{name: "the API", metrics: named("metrics"), path: "/v2/team/app/manifests/v1", want: "api"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			BesideAPI(named("api"), named("probes"), tt.metrics).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Body.String() != tt.want {
				t.Errorf("GET %s served by %q, want %q", tt.path, rec.Body, tt.want)
			}
		})
	}
}
