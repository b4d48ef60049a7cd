package observe

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
)

// Probes answers /healthz (the process is alive) and /readyz (it can
// serve: cache directory writable, index open, and ECR reachable with a
// valid token, or, with STALE_IF_ERROR, content in the cache to serve
// without ECR). A shared tier that fails or peers missing make it
// degraded (the first line says so), never unready. Neither needs client credentials: they are for the
// orchestrator.
type Probes struct {
	cacheDir string
	store    *cache.Store
	tokens   sources // one per ECR region
	reach    *Reachability
	// staleIfError: the mirror serves cached content while ECR cannot be
	// reached (STALE_IF_ERROR), so it is ready then, degraded.
	staleIfError bool
	// peers, when set, says how many PEERS members are known and
	// whether this replica is one (WatchPeers); sharedReachable whether
	// the shared tier answers (WatchSharedStore).
	peers           func() (members int, self bool, err error)
	sharedReachable func() bool
}

// WatchPeers adds a /readyz line for PEERS: status says how many members
// are known, whether this replica is among them, and why the last DNS
// resolution failed (nil: it worked). No member, or this replica not
// among them, makes the mirror degraded, never unready: pulls go on
// through the shared tier and ECR.
func (p *Probes) WatchPeers(status func() (members int, self bool, err error)) { p.peers = status }

// WatchSharedStore adds a /readyz line for the shared tier: reachable
// false (a read failed a moment ago) makes the mirror degraded, never
// unready: misses go to ECR meanwhile.
func (p *Probes) WatchSharedStore(reachable func() bool) { p.sharedReachable = reachable }

// tiers reports the shared tier and the peers, and names those failing.
func (p *Probes) tiers() (lines, failing []string) {
	if p.sharedReachable != nil {
		if p.sharedReachable() {
			lines = append(lines, "shared store: ok")
		} else {
			failing = append(failing, "shared store")
			lines = append(lines, "shared store: FAILING: a read failed; misses go to peers and ECR for a while")
		}
	}
	if p.peers == nil {
		return lines, failing
	}
	n, self, err := p.peers()
	line := fmt.Sprintf("peers: %d members, this replica among them", n)
	if !self {
		line = fmt.Sprintf("peers: %d members, this replica NOT among them (no member has PEER_ADDR's port at one of this host's addresses)", n)
	}
	if err != nil {
		line += fmt.Sprintf("; the last resolution failed: %v", err)
	}
	if n == 0 || !self {
		failing = append(failing, "peers")
		line = strings.Replace(line, "peers: ", "peers: FAILING: ", 1)
	}
	return append(lines, line), failing
}

// NewProbes checks the cache in cacheDir and store, the tokens from
// tokens (one source per ECR region; none when no upstream is ECR) and
// upstream reachability from reach; staleIfError is STALE_IF_ERROR set.
func NewProbes(cacheDir string, store *cache.Store, tokens []*auth.Source, reach *Reachability, staleIfError bool) *Probes {
	return &Probes{cacheDir: cacheDir, store: store, tokens: tokens, reach: reach, staleIfError: staleIfError}
}

// ServeHTTP answers /healthz and /readyz; other paths are not its own.
func (p *Probes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "/healthz" {
		fmt.Fprintln(w, "ok")
		return
	}
	lines, ready := p.check()
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

// check runs every readiness check and says how each went, and whether
// the mirror is ready. The cache must be writable and its index open. A
// valid ECR token is needed too, unless STALE_IF_ERROR is set: then a
// mirror that cannot reach ECR but holds content, or reaches a shared
// tier that does, is ready, degraded, and
// the first line says so and names the failing checks.
func (p *Probes) check() (lines []string, ready bool) {
	ready = true
	report := func(what string, err error) {
		if err != nil {
			ready = false
			lines = append(lines, fmt.Sprintf("%s: NOT READY: %v", what, err))
			return
		}
		lines = append(lines, what+": ok")
	}
	report("cache directory writable", p.writable())
	_, err := p.store.Stat(digest.FromString("readyz"))
	if errors.Is(err, cache.ErrNotFound) {
		err = nil
	}
	report("cache index open", err)

	var failing []string // the ECR checks that fail
	if at, ok := p.tokens.ready(); ok || len(p.tokens) == 0 {
		if ok {
			lines = append(lines, fmt.Sprintf("ECR token: ok (expires %s)", at.UTC().Format(time.RFC3339)))
		}
	} else if p.staleIfError {
		failing = append(failing, "ECR token")
		lines = append(lines, "ECR token: FAILING: no valid token (see the log for why GetAuthorizationToken fails)")
	} else {
		report("ECR token", errors.New("no valid token yet (see the log for why GetAuthorizationToken fails)"))
	}
	if err := p.reach.Check(); err != nil {
		failing = append(failing, "ECR reachable")
		lines = append(lines, fmt.Sprintf("ECR reachable: FAILING: %v", err))
	} else {
		lines = append(lines, "ECR reachable: ok")
	}
	tierLines, tierFailing := p.tiers()
	lines = append(lines, tierLines...)
	if !p.staleIfError || len(failing) == 0 {
		if ready && len(tierFailing) > 0 {
			status := fmt.Sprintf("degraded: pulls go on through ECR; failing: %s", strings.Join(tierFailing, ", "))
			lines = append([]string{status}, lines...)
		}
		return lines, ready
	}
	failing = append(failing, tierFailing...)
	// A shared tier that answers holds what the cluster has seen: an
	// empty local cache (a pod started during the outage) serves that.
	sharedServes := p.sharedReachable != nil && p.sharedReachable()
	if p.store.Stats().Entries == 0 && !sharedServes {
		report("cached content", errors.New("the cache holds nothing to serve while ECR cannot be reached, and no shared store answers"))
		return lines, ready
	}
	status := fmt.Sprintf("degraded: serving cached content without ECR (STALE_IF_ERROR); failing: %s", strings.Join(failing, ", "))
	return append([]string{status}, lines...), ready
}

// writable creates and removes a file where downloads are written.
func (p *Probes) writable() error {
	f, err := os.CreateTemp(filepath.Join(p.cacheDir, "tmp"), ".readyz-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, werr := f.Write([]byte("ok"))
	cerr := f.Close()
	rerr := os.Remove(name)
	return errors.Join(werr, cerr, rerr)
}
