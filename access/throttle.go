package access

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Defaults of the login throttle; see the package documentation.
const (
	// failureLimit failed logins from one address within failureWindow
	// block it for failureBackoff.
	failureLimit   = 10
	failureWindow  = time.Minute
	failureBackoff = time.Minute
	// trackedAddrs bounds how many client addresses are remembered.
	trackedAddrs = 4096
)

// strikes are one address's recent failed logins.
type strikes struct {
	n            int       // failures since first
	first        time.Time // start of the current window
	blockedUntil time.Time // zero: not blocked
}

// throttle remembers failed logins per client address and blocks an address
// that fails too often, so that it cannot keep bcrypt busy. An address
// blocked is refused before any bcrypt runs; it is forgotten when its
// backoff has passed or when other addresses push it out of the bounded
// table. IPv6 clients are counted per /64, which one host usually holds
// whole.
type throttle struct {
	now     func() time.Time
	limit   int
	window  time.Duration
	backoff time.Duration

	mu    sync.Mutex
	addrs *simplelru.LRU[netip.Addr, strikes]
}

func newThrottle(now func() time.Time) *throttle {
	addrs, _ := simplelru.NewLRU[netip.Addr, strikes](trackedAddrs, nil)
	return &throttle{now: now, limit: failureLimit, window: failureWindow, backoff: failureBackoff, addrs: addrs}
}

// blocked reports whether addr is backing off, and for how long still.
func (t *throttle) blocked(addr netip.Addr) (time.Duration, bool) {
	addr = bucket(addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.addrs.Peek(addr)
	if !ok || s.blockedUntil.IsZero() {
		return 0, false
	}
	left := s.blockedUntil.Sub(t.now())
	if left <= 0 {
		t.addrs.Remove(addr)
		return 0, false
	}
	return left, true
}

// fail counts a failed login from addr and reports whether it has just
// blocked the address.
func (t *throttle) fail(addr netip.Addr) bool {
	addr = bucket(addr)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s, _ := t.addrs.Get(addr)
	if !s.blockedUntil.IsZero() && now.Before(s.blockedUntil) {
		return false // already blocked: failures in flight when it was
	}
	if s.n == 0 || now.Sub(s.first) >= t.window || !s.blockedUntil.IsZero() {
		s = strikes{first: now}
	}
	s.n++
	if s.n >= t.limit {
		s.blockedUntil = now.Add(t.backoff)
	}
	t.addrs.Add(addr, s)
	return !s.blockedUntil.IsZero()
}

// bucket is the key addr is counted under: itself, or its /64 for IPv6.
func bucket(addr netip.Addr) netip.Addr {
	if addr.Is6() {
		p, err := addr.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return addr
}
