package access

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// fakeClock is a settable clock for the throttle.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// checkRetry asserts a 429 TOOMANYREQUESTS that says when to retry.
func checkRetry(t *testing.T, w interface {
	Header() http.Header
}, want string) {
	t.Helper()
	if got := w.Header().Get("Retry-After"); got != want {
		t.Fatalf("Retry-After %q, want %q", got, want)
	}
}

// While a storm of wrong logins holds every bcrypt slot, no more bcrypt
// runs start: new logins are told to retry, and a client already logged in
// is served at once.
func TestBcryptSlotsBoundConcurrency(t *testing.T) {
	t.Parallel()
	users := map[string]string{"alice": "a-pw", "bob": "b-pw"}
	f := newFixture(t, users, Config{})
	check(t, f.do(req{method: "GET", path: "/v2/", user: "alice", pw: "a-pw"}), 418, "") // alice logs in

	const slots, storm = 2, 10
	f.policy.users().slots = make(chan struct{}, slots)
	f.policy.users().maxWaiting = 0 // no queue: refused at once (TestLoginsWaitInTurn)
	var active, most, runs atomic.Int64
	release := make(chan struct{})
	f.policy.users().compare = func(hash, pw []byte) error {
		runs.Add(1)
		n := active.Add(1)
		defer active.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return bcrypt.CompareHashAndPassword(hash, pw)
	}

	codes := make(chan int, storm)
	var wg sync.WaitGroup
	for i := range storm {
		// Each from an address of its own, so that only the slots limit them.
		wg.Go(func() {
			w := f.do(req{method: "GET", path: "/v2/", user: "alice", pw: fmt.Sprint("guess", i), remote: fmt.Sprintf("198.51.100.%d:1", i+1)})
			if w.Code == 429 {
				check(t, w, 429, "TOOMANYREQUESTS")
				checkRetry(t, w, "1")
			}
			codes <- w.Code
		})
	}
	// Exactly slots requests hold a slot until released; every other one
	// is answered without waiting.
	for range storm - slots {
		if c := <-codes; c != 429 {
			t.Errorf("storm request answered %d while the slots were held, want 429", c)
		}
	}
	// A slot is taken a moment before its bcrypt run starts.
	for deadline := time.Now().Add(20 * time.Second); active.Load() != slots; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bcrypt runs in progress, want %d", active.Load(), slots)
		}
	}
	check(t, f.do(req{method: "GET", path: "/v2/team/app/manifests/v1", user: "alice", pw: "a-pw"}), 418, "")
	w := f.do(req{method: "GET", path: "/v2/", user: "bob", pw: "b-pw"})
	check(t, w, 429, "TOOMANYREQUESTS")
	checkRetry(t, w, "1")

	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 401 {
			t.Errorf("storm request that held a slot: %d, want 401", c)
		}
	}
	if most.Load() != slots || runs.Load() != slots {
		t.Errorf("bcrypt: %d runs, at most %d at once; want %d and %d", runs.Load(), most.Load(), slots, slots)
	}
	check(t, f.do(req{method: "GET", path: "/v2/", user: "bob", pw: "b-pw"}), 418, "")
}

// New logins that find every bcrypt slot taken wait in turn, as the
// logins of a farm do after an htpasswd rotation re-salted every entry:
// those that fit in the queue are checked once a slot frees, the rest
// are refused at once with 429, and none of them runs bcrypt early.
func TestLoginsWaitInTurn(t *testing.T) {
	t.Parallel()
	users := map[string]string{"alice": "a-pw", "bob": "b-pw", "carol": "c-pw", "dave": "d-pw"}
	f := newFixture(t, users, Config{})
	h := f.policy.users()
	h.slots = make(chan struct{}, 1)
	h.maxWaiting = 2
	h.slotWait = time.Hour // released below, never timed out
	var runs atomic.Int64
	release := make(chan struct{})
	h.compare = func(hash, pw []byte) error {
		if runs.Add(1) == 1 {
			<-release // alice's run holds the only slot
		}
		return bcrypt.CompareHashAndPassword(hash, pw)
	}
	codes := make(map[string]chan int)
	login := func(user string) {
		c := make(chan int, 1)
		codes[user] = c
		pw := users[user]
		go func() { c <- f.do(req{method: "GET", path: "/v2/", user: user, pw: pw}).Code }()
	}
	login("alice")
	testwait.Until(t, "alice's bcrypt run to start", func() bool { return runs.Load() == 1 })
	login("bob")
	login("carol")
	testwait.Until(t, "bob and carol to wait for the slot", func() bool { return h.waiting.Load() == 2 })
	w := f.do(req{method: "GET", path: "/v2/", user: "dave", pw: users["dave"]})
	check(t, w, 429, "TOOMANYREQUESTS")
	checkRetry(t, w, "1")
	if n := runs.Load(); n != 1 {
		t.Errorf("%d bcrypt runs while the slot was held, want 1", n)
	}
	close(release)
	for _, u := range []string{"alice", "bob", "carol"} {
		if c := <-codes[u]; c != 418 {
			t.Errorf("%s's login: %d, want it through (418)", u, c)
		}
	}
	check(t, f.do(req{method: "GET", path: "/v2/", user: "dave", pw: users["dave"]}), 418, "")
}

func TestBcryptSlotsDefault(t *testing.T) {
	t.Parallel()
	if n := bcryptSlots(); n < 1 {
		t.Fatalf("bcryptSlots() = %d", n)
	}
}

// An address that keeps failing is blocked for a while without any bcrypt
// run; other addresses, and credentials already verified, are not.
func TestFailingAddressBacksOff(t *testing.T) {
	t.Parallel()
	users := map[string]string{"alice": "a-pw", "bob": "b-pw"}
	f := newFixture(t, users, Config{})
	clock := &fakeClock{}
	clock.advance(time.Hour)
	th := newThrottle(clock.now)
	th.limit, th.window, th.backoff = 3, time.Minute, 2*time.Minute
	f.policy.users().throttle = th
	const attacker = "203.0.113.5:1"
	check(t, f.do(req{method: "GET", path: "/v2/", user: "alice", pw: "a-pw", remote: attacker}), 418, "")

	wrong := func(remote string, i int) *req {
		return &req{method: "GET", path: "/v2/", user: "bob", pw: fmt.Sprint("guess", i), remote: remote}
	}
	runs := func(do func()) int64 {
		before := f.calls.Load()
		do()
		return f.calls.Load() - before
	}
	// The limit's worth of failures, each a bcrypt run; repeating one
	// costs nothing and does not count.
	for i := range 3 {
		if n := runs(func() { check(t, f.do(*wrong(attacker, i)), 401, "UNAUTHORIZED") }); n != 1 {
			t.Fatalf("failure %d: %d bcrypt runs, want 1", i+1, n)
		}
		if i == 0 {
			for range 5 {
				if n := runs(func() { check(t, f.do(*wrong(attacker, 0)), 401, "UNAUTHORIZED") }); n != 0 {
					t.Fatalf("a repeated wrong password ran bcrypt %d times", n)
				}
			}
		}
	}
	// Blocked now: new guesses, even the right password, are refused
	// unchecked; alice, verified before, still gets in from there.
	clock.advance(30 * time.Second)
	n := runs(func() {
		w := f.do(*wrong(attacker, 99))
		check(t, w, 429, "TOOMANYREQUESTS")
		checkRetry(t, w, "90")
		check(t, f.do(req{method: "GET", path: "/v2/", user: "bob", pw: "b-pw", remote: attacker}), 429, "TOOMANYREQUESTS")
	})
	if n != 0 {
		t.Fatalf("a blocked address ran bcrypt %d times", n)
	}
	check(t, f.do(req{method: "GET", path: "/v2/team/manifests/v1", user: "alice", pw: "a-pw", remote: attacker}), 418, "")
	// Another address is unaffected.
	check(t, f.do(*wrong("203.0.113.6:1", 100)), 401, "UNAUTHORIZED")
	if got := strings.Count(f.logs.String(), "too many failed logins: address blocked"); got != 1 {
		t.Errorf("%d log lines about the block, want 1:\n%s", got, f.logs)
	}

	// After the backoff, the address is checked again.
	clock.advance(90 * time.Second)
	if n := runs(func() {
		check(t, f.do(req{method: "GET", path: "/v2/", user: "bob", pw: "b-pw", remote: attacker}), 418, "")
	}); n != 1 {
		t.Fatalf("after the backoff: %d bcrypt runs, want 1", n)
	}

	// Failures spread wider than the window never block.
	for i := range 6 {
		check(t, f.do(*wrong("203.0.113.7:1", 200+i)), 401, "UNAUTHORIZED")
		clock.advance(40 * time.Second)
	}
	// IPv6 addresses count per /64.
	for i := range 3 {
		check(t, f.do(*wrong(fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1), 300+i)), 401, "UNAUTHORIZED")
	}
	check(t, f.do(*wrong("[2001:db8:1:2:ffff::1]:1", 400)), 429, "TOOMANYREQUESTS")
	check(t, f.do(*wrong("[2001:db8:1:3::1]:1", 401)), 401, "UNAUTHORIZED")
}
