package observe

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/proxy"
)

func TestReachabilityFollowsTheLastAttempt(t *testing.T) {
	t.Parallel()
	answered := func(status int) func(*Reachability) {
		return func(r *Reachability) {
			r.ObserveUpstream(proxy.UpstreamEvent{Kind: "blob", Method: "GET", Status: status})
		}
	}
	failed := func(failure string) func(*Reachability) {
		return func(r *Reachability) {
			r.ObserveUpstream(proxy.UpstreamEvent{Kind: "manifest", Method: "HEAD", Failure: failure})
		}
	}
	token := func(err error) func(*Reachability) { return func(r *Reachability) { r.TokenFetched(err) } }
	tests := []struct {
		name    string
		events  []func(*Reachability)
		wantErr string // "" when reachable
	}{
		{name: "nothing tried", wantErr: "not tried yet"},
		{name: "token fetched", events: []func(*Reachability){token(nil)}},
		{name: "token failed", events: []func(*Reachability){token(errors.New("no creds"))}, wantErr: "token fetch failed: no creds"},
		{name: "answered 200", events: []func(*Reachability){token(errors.New("no creds")), answered(200)}},
		{name: "answered 404", events: []func(*Reachability){answered(404)}},
		{name: "answered 503", events: []func(*Reachability){answered(503)}, wantErr: "GET blob: ECR answered 503"},
		{name: "throttled", events: []func(*Reachability){answered(429)}, wantErr: "ECR answered 429"},
		{name: "timeout", events: []func(*Reachability){answered(200), failed("timeout")}, wantErr: "HEAD manifest: timeout"},
		{name: "client went away", events: []func(*Reachability){answered(200), failed("canceled")}},
		{name: "canceled says nothing", events: []func(*Reachability){failed("canceled")}, wantErr: "not tried yet"},
	}
	at := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := NewReachability(func() time.Time { return at })
			for _, ev := range tt.events {
				ev(r)
			}
			err := r.Check()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Check() = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

// Each upstream's last attempt counts: one answering does not hide
// another that cannot be reached, which the error names.
func TestReachabilityIsKeptPerUpstream(t *testing.T) {
	t.Parallel()
	r := NewReachability(time.Now)
	r.ObserveUpstream(proxy.UpstreamEvent{Upstream: "ecr.example", Kind: "blob", Method: "GET", Failure: "unreachable"})
	r.ObserveUpstream(proxy.UpstreamEvent{Upstream: "ghcr.io", Kind: "blob", Method: "GET", Status: 200})
	err := r.Check()
	if err == nil || !strings.Contains(err.Error(), "ecr.example: last attempt at") || strings.Contains(err.Error(), "ghcr.io") {
		t.Fatalf("Check() = %v, want ecr.example named as failing, and only it", err)
	}
	r.ObserveUpstream(proxy.UpstreamEvent{Upstream: "ecr.example", Kind: "blob", Method: "GET", Status: 200})
	if err := r.Check(); err != nil {
		t.Fatalf("Check() = %v once every upstream answered", err)
	}
	r.TokenFetchedIn("us-east-1")(errors.New("no credentials"))
	r.TokenFetchedIn("eu-west-1")(nil)
	if err := r.Check(); err == nil || !strings.Contains(err.Error(), "ECR token API of us-east-1: last attempt at") {
		t.Fatalf("Check() = %v, want the failing region's token API named", err)
	}
	r.TokenFetchedIn("us-east-1")(nil)
	if err := r.Check(); err != nil {
		t.Fatalf("Check() = %v once every upstream answered", err)
	}
}
