package access

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"
)

const (
	// reloadEvery is how often the htpasswd file's stat is checked, at most.
	reloadEvery = 3 * time.Second
	// verifiedEntries bounds the cache of successful verifications.
	verifiedEntries = 1024
	// failedEntries bounds the memory of failed ones.
	failedEntries = 4096
	// maxHtpasswdSize guards against pointing the setting at a huge file.
	maxHtpasswdSize = 16 << 20
)

// users is one load of the htpasswd file.
type users struct {
	hashes map[string][]byte // user → bcrypt hash
	info   os.FileInfo       // the file as it was read, to notice changes
}

// htpasswd checks Basic credentials against an htpasswd file, re-reading it
// when it changes and remembering successful verifications.
type htpasswd struct {
	path string
	log  *slog.Logger
	// compare is bcrypt.CompareHashAndPassword; tests count its calls.
	compare     func(hash, password []byte) error
	reloadEvery time.Duration

	current   atomic.Pointer[users]
	nextCheck atomic.Int64 // unix nanoseconds
	reloadMu  sync.Mutex   // one reload at a time
	// Under reloadMu: what was last reported, so each problem is logged once.
	failed  os.FileInfo // the version of the file that failed to load
	missing bool        // the file could not be stat'ed

	// dummy is compared against for unknown users, so that they take as
	// long to refuse as a wrong password does.
	dummy    []byte
	macKey   []byte
	verified *lru.Cache[[sha256.Size]byte, struct{}]
	// refused remembers credentials that failed, so that a client
	// repeating them costs no bcrypt run.
	refused *lru.Cache[[sha256.Size]byte, struct{}]
	flight  singleflight.Group
	// slots bounds the bcrypt runs at a time: a token is held per run.
	// A check that finds them all taken waits for one, up to slotWait,
	// unless maxWaiting checks already wait: then it is refused at once.
	slots      chan struct{}
	waiting    atomic.Int64
	maxWaiting int64
	slotWait   time.Duration
	throttle   *throttle
}

// Waiting for a bcrypt slot: enough room that the logins of a whole farm
// after an htpasswd rotation (every entry re-salted, so nothing is in the
// verified cache) are checked in turn rather than refused, and bounded
// so a storm cannot hold more than this many requests.
const (
	maxSlotWaiters = 64
	maxSlotWait    = 10 * time.Second
)

// verdict is the outcome of a credentials check.
type verdict int

const (
	verdictOK      verdict = iota + 1
	verdictWrong           // wrong password or unknown user; bcrypt ran
	verdictKnown           // wrong, and remembered as such: no bcrypt ran
	verdictBusy            // every bcrypt slot is taken: not checked
	verdictBlocked         // the client's address is backing off: not checked
)

// bcryptSlots is how many bcrypt runs may go at once: half the CPUs, so
// that a storm of logins leaves the rest to clients already logged in.
func bcryptSlots() int {
	return max(1, runtime.GOMAXPROCS(0)/2)
}

func newHtpasswd(path string, log *slog.Logger, th *throttle) (*htpasswd, error) {
	u, err := loadHtpasswd(path)
	if err != nil {
		return nil, err
	}
	h := &htpasswd{
		path:        path,
		log:         log,
		compare:     bcrypt.CompareHashAndPassword,
		reloadEvery: reloadEvery,
		macKey:      make([]byte, 32),
	}
	if _, err := rand.Read(h.macKey); err != nil {
		return nil, err
	}
	h.verified, _ = lru.New[[sha256.Size]byte, struct{}](verifiedEntries)
	h.refused, _ = lru.New[[sha256.Size]byte, struct{}](failedEntries)
	h.slots = make(chan struct{}, bcryptSlots())
	h.maxWaiting, h.slotWait = maxSlotWaiters, maxSlotWait
	h.throttle = th
	// The dummy hash costs what the file's entries cost.
	cost := bcrypt.DefaultCost
	for _, hash := range u.hashes {
		if c, err := bcrypt.Cost(hash); err == nil {
			cost = c
		}
		break
	}
	if h.dummy, err = bcrypt.GenerateFromPassword([]byte("ecr-mirror: no such user"), cost); err != nil {
		return nil, err
	}
	h.current.Store(u)
	h.nextCheck.Store(time.Now().Add(h.reloadEvery).UnixNano())
	return h, nil
}

// count returns how many users the file holds now.
func (h *htpasswd) count() int {
	return len(h.current.Load().hashes)
}

// has reports whether user is in the file now.
func (h *htpasswd) has(user string) bool {
	_, ok := h.current.Load().hashes[user]
	return ok
}

// verify reports whether password is user's, as check does for a client
// that is never throttled.
func (h *htpasswd) verify(user, password string) bool {
	v, _ := h.check(user, password, netip.Addr{}, false)
	return v == verdictOK
}

// check checks Basic credentials from a client at addr. Credentials that
// verified before are accepted at once, whatever else is going on: a
// logged-in client never waits for bcrypt. Credentials that failed before
// are refused at once. Otherwise, when throttled is set and addr is backing
// off after too many failures, or when every bcrypt slot is taken and
// cannot be had in turn (acquireSlot), the client is told to retry after
// the duration returned, and no bcrypt runs. Concurrent checks of the
// same credentials share one bcrypt run.
func (h *htpasswd) check(user, password string, addr netip.Addr, throttled bool) (verdict, time.Duration) {
	h.maybeReload()
	hash, known := h.current.Load().hashes[user]
	key := h.key(user, hash, password)
	if known {
		if _, ok := h.verified.Get(key); ok {
			return verdictOK, 0
		}
	}
	if _, ok := h.refused.Get(key); ok {
		return verdictKnown, 0
	}
	if throttled {
		if left, ok := h.throttle.blocked(addr); ok {
			return verdictBlocked, left
		}
	}
	v, _, _ := h.flight.Do(string(key[:]), func() (any, error) {
		if !h.acquireSlot() {
			return verdictBusy, nil
		}
		defer func() { <-h.slots }()
		if throttled {
			// The address may have been blocked while this waited.
			if _, ok := h.throttle.blocked(addr); ok {
				return verdictBlocked, nil
			}
		}
		if !known {
			_ = h.compare(h.dummy, []byte(password))
			h.refused.Add(key, struct{}{})
			return verdictWrong, nil
		}
		if h.compare(hash, []byte(password)) != nil {
			h.refused.Add(key, struct{}{})
			return verdictWrong, nil
		}
		h.verified.Add(key, struct{}{})
		return verdictOK, nil
	})
	switch v.(verdict) {
	case verdictBusy:
		return verdictBusy, time.Second
	case verdictBlocked:
		left, _ := h.throttle.blocked(addr)
		return verdictBlocked, left
	case verdictWrong:
		if throttled {
			h.throttle.fail(addr)
		}
	}
	return v.(verdict), 0
}

// acquireSlot takes a bcrypt slot: at once when one is free, else in
// turn behind at most maxWaiting other checks, for up to slotWait. It
// reports false when it got none.
func (h *htpasswd) acquireSlot() bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
	}
	if h.waiting.Add(1) > h.maxWaiting {
		h.waiting.Add(-1)
		return false
	}
	defer h.waiting.Add(-1)
	t := time.NewTimer(h.slotWait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// key identifies one verification: a changed hash (a new password in the
// file) gives a new key. It is an HMAC under a per-process key so that the
// cache in memory is no dictionary of password hashes.
func (h *htpasswd) key(user string, hash []byte, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, h.macKey)
	for _, part := range [][]byte{[]byte(user), hash, []byte(password)} {
		_ = binary.Write(m, binary.BigEndian, uint64(len(part)))
		m.Write(part)
	}
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// maybeReload re-reads the file when it has changed, at most once per
// reloadEvery. A file that fails to load leaves the previous users in place;
// the failure is logged once per version of the file and retried, so a
// file caught mid-write is picked up once it is whole.
func (h *htpasswd) maybeReload() {
	now := time.Now()
	if now.UnixNano() < h.nextCheck.Load() || !h.reloadMu.TryLock() {
		return
	}
	defer h.reloadMu.Unlock()
	if now.UnixNano() < h.nextCheck.Load() {
		return
	}
	h.nextCheck.Store(now.Add(h.reloadEvery).UnixNano())
	fi, err := os.Stat(h.path)
	if err != nil {
		if !h.missing {
			h.log.Warn("htpasswd file unreadable; keeping the previous users", "error", err)
			h.missing = true
		}
		return
	}
	h.missing = false
	cur := h.current.Load()
	if sameVersion(cur.info, fi) {
		return
	}
	u, err := loadHtpasswd(h.path)
	if err != nil {
		if !sameVersion(h.failed, fi) {
			h.log.Warn("htpasswd file changed but does not load; keeping the previous users", "error", err)
			h.failed = fi
		}
		return
	}
	h.failed = nil
	h.current.Store(u)
	h.log.Info("htpasswd file reloaded", "path", h.path, "users", len(u.hashes))
}

// sameVersion reports whether a and b describe the same version of a file:
// the same inode (a rename or a Kubernetes secret update gives a new one),
// modification time and size.
func sameVersion(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return false
	}
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// loadHtpasswd reads an htpasswd file of bcrypt entries. Errors name the
// file, the line and the user, never the hash.
func loadHtpasswd(path string) (*users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("htpasswd file: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxHtpasswdSize+1))
	if err != nil {
		return nil, fmt.Errorf("htpasswd file: %w", err)
	}
	if len(data) > maxHtpasswdSize {
		return nil, fmt.Errorf("htpasswd file %s: larger than %d MiB", path, maxHtpasswdSize>>20)
	}
	hashes, err := parseHtpasswd(string(data))
	if err != nil {
		return nil, fmt.Errorf("htpasswd file %s: %w", path, err)
	}
	return &users{hashes: hashes, info: info}, nil
}

// parseHtpasswd parses user:hash lines; blank lines and # comments are
// skipped.
func parseHtpasswd(text string) (map[string][]byte, error) {
	hashes := map[string][]byte{}
	lineOf := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: want user:hash", n)
		}
		user, hash = strings.TrimSpace(user), strings.TrimSpace(hash)
		if user == "" {
			return nil, fmt.Errorf("line %d: empty user name", n)
		}
		if first, dup := lineOf[user]; dup {
			return nil, fmt.Errorf("line %d: user %q again (first on line %d)", n, user, first)
		}
		if kind := nonBcrypt(hash); kind != "" {
			return nil, fmt.Errorf("line %d: user %q: %s; only bcrypt hashes ($2y$, $2a$, $2b$) are accepted: create entries with htpasswd -B", n, user, kind)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil || len(hash) != 60 {
			return nil, fmt.Errorf("line %d: user %q: malformed bcrypt hash", n, user)
		}
		hashes[user] = []byte(hash)
		lineOf[user] = n
	}
	return hashes, nil
}

// nonBcrypt names the kind of a hash that is not bcrypt, or returns "".
func nonBcrypt(hash string) string {
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		return ""
	case hash == "":
		return "empty password hash"
	case strings.HasPrefix(hash, "$apr1$"):
		return "MD5 hash ($apr1$)"
	case strings.HasPrefix(hash, "{SHA}"):
		return "SHA-1 hash ({SHA})"
	case strings.HasPrefix(hash, "$1$"):
		return "MD5-crypt hash ($1$)"
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		return "SHA-crypt hash (" + hash[:3] + ")"
	case strings.HasPrefix(hash, "$2"):
		return "unsupported bcrypt variant"
	case strings.HasPrefix(hash, "$"):
		return "unknown hash type"
	case len(hash) == 13:
		return "crypt(3) DES hash or plain text"
	}
	return "plain-text password or unknown hash type"
}
