package observe

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecr-mirror/ecr-mirror/internal/buildinfo"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

func TestLabelsComeFromFixedSets(t *testing.T) {
	t.Parallel()
	methods := []struct{ in, want string }{
		{"GET", "GET"}, {"HEAD", "HEAD"}, {"PATCH", "PATCH"}, {"OPTIONS", "OPTIONS"},
		{"get", "other"}, {"PROPFIND", "other"}, {"", "other"},
	}
	for _, tt := range methods {
		if got := methodLabel(tt.in); got != tt.want {
			t.Errorf("methodLabel(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	statuses := []struct {
		in   int
		want string
	}{{200, "200"}, {100, "100"}, {599, "599"}, {99, "other"}, {600, "other"}, {0, "other"}, {-1, "other"}}
	for _, tt := range statuses {
		if got := statusLabel(tt.in); got != tt.want {
			t.Errorf("statusLabel(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestObserveUpstreamCountsFailuresByReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		ev         proxy.UpstreamEvent
		wantReason string // "" when no error is counted
		answered   bool
	}{
		{name: "ok", ev: proxy.UpstreamEvent{Kind: "blob", Method: "GET", Status: 200, Duration: time.Millisecond}, answered: true},
		{name: "throttled", ev: proxy.UpstreamEvent{Kind: "blob", Method: "GET", Status: 429}, wantReason: "throttled", answered: true},
		{name: "denied", ev: proxy.UpstreamEvent{Kind: "blob", Method: "GET", Status: 403}, wantReason: "denied", answered: true},
		{name: "server", ev: proxy.UpstreamEvent{Kind: "blob", Method: "GET", Status: 502}, wantReason: "server", answered: true},
		{name: "timeout", ev: proxy.UpstreamEvent{Kind: "blob", Method: "GET", Failure: "timeout"}, wantReason: "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newMetrics()
			m.ObserveUpstream(tt.ev)
			if got := series(t, m.upstreamErrors); (got == 1) != (tt.wantReason != "") {
				t.Fatalf("%d error series, want an error counted: %v", got, tt.wantReason != "")
			}
			if tt.wantReason != "" {
				if got := value(t, m, "ecr_mirror_upstream_errors_total", "reason", tt.wantReason); got != 1 {
					t.Errorf("upstream_errors_total{reason=%q} = %v, want 1", tt.wantReason, got)
				}
			}
			if got := series(t, m.upstream); (got == 1) != tt.answered {
				t.Errorf("%d answered series, want one: %v", got, tt.answered)
			}
		})
	}
}

func TestObserveRequestCountsServedBytesBySource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		outcome string
		source  string
	}{
		{proxy.OutcomeHit, "cache"},
		{proxy.OutcomeRevalidated, "cache"},
		{proxy.OutcomeStale, "cache"},
		{proxy.OutcomeJoined, "cache"},
		{proxy.OutcomeFresh, "cache"},
		{proxy.OutcomeMiss, "upstream"},
		{proxy.OutcomeCoalesced, "upstream"},
		{proxy.OutcomeShared, "shared"},
		{proxy.OutcomePeer, "peer"},
	}
	for _, tt := range tests {
		t.Run(tt.outcome, func(t *testing.T) {
			t.Parallel()
			m := newMetrics()
			m.ObserveRequest(registry.RequestInfo{Route: "blob", Method: "GET", Status: 200, Outcome: tt.outcome, Bytes: 42})
			if got := value(t, m, "ecr_mirror_served_bytes_total", "source", tt.source); got != 42 {
				t.Errorf("served_bytes_total{source=%q} = %v, want 42", tt.source, got)
			}
			if got := value(t, m, "ecr_mirror_http_requests_total", "code", "200"); got != 1 {
				t.Errorf("http_requests_total = %v, want 1", got)
			}
		})
	}
}

// Series whose labels are known exist at 0 before the first request,
// so rules and dashboards over them evaluate from the start.
func TestKnownSeriesExistBeforeTheFirstEvent(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	tests := []struct {
		metric, label string
		values        []string
	}{
		{"ecr_mirror_served_bytes_total", "source", []string{"cache", "upstream"}},
		{"ecr_mirror_cache_requests_total", "outcome", []string{"hit", "miss", "coalesced", "revalidated", "joined", "fresh", "stale", "upstream"}},
	}
	for _, tt := range tests {
		for _, v := range tt.values {
			if _, ok := lookup(t, m, tt.metric, tt.label, v); !ok {
				t.Errorf("%s{%s=%q} does not exist before the first request", tt.metric, tt.label, v)
			}
		}
	}
}

// value reads the counter name of m's series whose label is want; 0
// when there is none.
func value(t *testing.T, m *Metrics, name, label, want string) float64 {
	t.Helper()
	v, _ := lookup(t, m, name, label, want)
	return v
}

// lookup reads the counter name of m's series whose label is want; ok
// is false when there is none.
func lookup(t *testing.T, m *Metrics, name, label, want string) (v float64, ok bool) {
	t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == label && l.GetValue() == want {
					return s.GetCounter().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// series counts the series c holds.
func series(t *testing.T, c prometheus.Collector) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

func TestBuildInfoNamesTheRunningBuild(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	m.RegisterBuildInfo(buildinfo.Info{Version: "v1.2.0", Commit: "0123abc+dirty", GoVersion: "go1.26.8", Platform: "linux/amd64"})
	rec := httptest.NewRecorder()
	m.Handler(slog.New(slog.DiscardHandler)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	want := `ecr_mirror_build_info{commit="0123abc+dirty",goversion="go1.26.8",version="v1.2.0"} 1`
	if !strings.Contains(rec.Body.String(), want+"\n") {
		t.Fatalf("/metrics lacks %s:\n%s", want, rec.Body.String())
	}
}
