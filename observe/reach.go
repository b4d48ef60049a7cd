package observe

import (
	"fmt"
	"sync"
	"time"

	"github.com/ecr-mirror/ecr-mirror/proxy"
)

// Reachability remembers whether the mirror's last attempt to reach ECR,
// a token fetch or a registry request, succeeded: for /readyz and the
// ecr_mirror_upstream_reachable gauge.
type Reachability struct {
	now func() time.Time

	mu    sync.Mutex
	tried bool      // an attempt has been made
	ok    bool      // the last attempt succeeded
	why   string    // why the last attempt failed
	at    time.Time // when the last attempt ended
}

// NewReachability starts with no attempt made; now stamps each attempt.
func NewReachability(now func() time.Time) *Reachability {
	return &Reachability{now: now}
}

// TokenFetched records a token fetch (auth.Options.OnFetch).
func (r *Reachability) TokenFetched(err error) {
	if err != nil {
		r.record(false, fmt.Sprintf("token fetch failed: %v", err))
		return
	}
	r.record(true, "")
}

// ObserveUpstream records a registry request. An answer is success, but
// for a 5xx or 429, which say ECR cannot serve; a client that went away
// says nothing about ECR.
func (r *Reachability) ObserveUpstream(ev proxy.UpstreamEvent) {
	switch {
	case ev.Failure == "canceled":
	case ev.Failure != "":
		r.record(false, fmt.Sprintf("%s %s: %s", ev.Method, ev.Kind, ev.Failure))
	case ev.Status >= 500 || ev.Status == 429:
		r.record(false, fmt.Sprintf("%s %s: ECR answered %d", ev.Method, ev.Kind, ev.Status))
	default:
		r.record(true, "")
	}
}

func (r *Reachability) record(ok bool, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tried, r.ok, r.why, r.at = true, ok, why, r.now()
}

// Check says whether the last attempt succeeded, and otherwise why not:
// nil when it did.
func (r *Reachability) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.tried:
		return fmt.Errorf("not tried yet")
	case !r.ok:
		return fmt.Errorf("last attempt at %s: %s", r.at.UTC().Format(time.RFC3339), r.why)
	}
	return nil
}
