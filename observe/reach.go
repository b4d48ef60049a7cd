package observe

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ecr-mirror/ecr-mirror/proxy"
)

// Reachability remembers whether the mirror's last attempt to reach each
// upstream, a token fetch or a registry request, succeeded: for /readyz
// and the ecr_mirror_upstream_reachable gauge. Attempts are kept per
// upstream host (UpstreamEvent.Upstream; token fetches and events that
// name none share one entry), so one upstream answering does not hide
// another that cannot be reached.
type Reachability struct {
	now func() time.Time

	mu   sync.Mutex
	last map[string]attempt // by upstream host
}

// attempt is how the last attempt to reach one upstream went.
type attempt struct {
	ok  bool      // it succeeded
	why string    // why it failed
	at  time.Time // when it ended
}

// NewReachability starts with no attempt made; now stamps each attempt.
func NewReachability(now func() time.Time) *Reachability {
	return &Reachability{now: now, last: map[string]attempt{}}
}

// TokenFetched records a token fetch (auth.Options.OnFetch).
func (r *Reachability) TokenFetched(err error) {
	if err != nil {
		r.record("", false, fmt.Sprintf("token fetch failed: %v", err))
		return
	}
	r.record("", true, "")
}

// TokenFetchedIn returns what records the token fetches of one AWS
// region (auth.Options.OnFetch), kept apart from other regions'.
func (r *Reachability) TokenFetchedIn(region string) func(error) {
	key := "ECR token API of " + region
	return func(err error) {
		if err != nil {
			r.record(key, false, fmt.Sprintf("token fetch failed: %v", err))
			return
		}
		r.record(key, true, "")
	}
}

// ObserveUpstream records a registry request. An answer is success, but
// for a 5xx or 429, which say the upstream cannot serve; a client that
// went away says nothing about the upstream.
func (r *Reachability) ObserveUpstream(ev proxy.UpstreamEvent) {
	switch {
	case ev.Failure == "canceled":
	case ev.Failure != "":
		r.record(ev.Upstream, false, fmt.Sprintf("%s %s: %s", ev.Method, ev.Kind, ev.Failure))
	case ev.Status >= 500 || ev.Status == 429:
		r.record(ev.Upstream, false, fmt.Sprintf("%s %s: ECR answered %d", ev.Method, ev.Kind, ev.Status))
	default:
		r.record(ev.Upstream, true, "")
	}
}

func (r *Reachability) record(host string, ok bool, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last[host] = attempt{ok: ok, why: why, at: r.now()}
}

// Check says whether the last attempt to reach each upstream succeeded,
// and otherwise why not, naming the upstreams that failed: nil when every
// one did.
func (r *Reachability) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.last) == 0 {
		return fmt.Errorf("not tried yet")
	}
	var failed []string
	for host, a := range r.last {
		if a.ok {
			continue
		}
		msg := fmt.Sprintf("last attempt at %s: %s", a.at.UTC().Format(time.RFC3339), a.why)
		if host != "" {
			msg = host + ": " + msg
		}
		failed = append(failed, msg)
	}
	if len(failed) == 0 {
		return nil
	}
	slices.Sort(failed)
	return errors.New(strings.Join(failed, "; "))
}
