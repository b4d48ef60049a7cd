package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

const (
	// defaultRefreshBefore is the most a token is refreshed ahead of expiry
	// when Options.RefreshBefore is 0 (1 h of a 12 h ECR token, as zot does).
	defaultRefreshBefore = time.Hour
	// defaultFetchTimeout bounds one fetch; fetches run detached from the
	// caller that started them, so something else must end them.
	defaultFetchTimeout = 30 * time.Second
	// minFetchInterval spaces successful proactive refreshes, so a fetcher
	// that hands out very short-lived tokens cannot make Run spin.
	minFetchInterval = time.Second
	// Failed fetches are retried after backoffMin, doubling up to backoffMax.
	backoffMin = time.Second
	backoffMax = 5 * time.Minute

	// singleflight keys: proactive/on-demand fetches and forced refreshes
	// after a rejection are separate flights, because a Token flight may
	// legitimately answer with the very token a Refresh caller saw rejected.
	keyToken   = "token"
	keyRefresh = "refresh"
)

// Options configure a Source. The zero value is usable.
type Options struct {
	// Logger receives fetch and refresh events; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests inject one.
	Now func() time.Time
	// RefreshBefore is how long before expiry a token is refreshed. 0 means
	// min(1h, lifetime/2) per token. A value at least the token's lifetime
	// would make every use refresh, so lifetime/2 is used instead.
	RefreshBefore time.Duration
	// FetchTimeout bounds one fetch; 0 means 30s. A fetch runs on a context
	// detached from the caller that started it, so that one caller giving up
	// does not fail the others waiting on the same fetch.
	FetchTimeout time.Duration
	// OnFetch, when set, is called after every fetch with its error (nil
	// when a usable token came), e.g. to tell whether ECR can be reached.
	// It must not block.
	OnFetch func(err error)
}

// Stats are a Source's counters since it was created.
type Stats struct {
	// Fetches counts calls of the FetchFunc, successful or not.
	Fetches uint64
	// FetchFailures counts fetches that returned an error or an unusable token.
	FetchFailures uint64
	// Refreshes counts fetches forced by Refresh after upstream rejected a token.
	Refreshes uint64
}

// Source caches the current token and refreshes it: on demand in Token,
// after a rejection in Refresh, and ahead of expiry in Run. Concurrent
// fetches are coalesced. A Source is safe for concurrent use; create it with
// NewSource.
type Source struct {
	fetch         FetchFunc
	log           *slog.Logger
	now           func() time.Time
	refreshBefore time.Duration
	fetchTimeout  time.Duration
	onFetch       func(error)

	group singleflight.Group

	mu        sync.Mutex
	cur       Token
	refreshAt time.Time // when cur is due for refresh
	nextTry   time.Time // no proactive fetch before this (spacing, backoff)
	failures  int       // consecutive failed fetches, for the backoff

	fetches       atomic.Uint64
	fetchFailures atomic.Uint64
	refreshes     atomic.Uint64
}

// NewSource returns a Source that gets tokens from fetch. It fetches
// nothing until first asked (Token, Refresh or Run).
func NewSource(fetch FetchFunc, opts Options) *Source {
	s := &Source{
		fetch:         fetch,
		log:           opts.Logger,
		now:           opts.Now,
		refreshBefore: opts.RefreshBefore,
		fetchTimeout:  opts.FetchTimeout,
		onFetch:       opts.OnFetch,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.fetchTimeout <= 0 {
		s.fetchTimeout = defaultFetchTimeout
	}
	return s
}

// Token returns the cached token, fetching one if none is held or the held
// one is due for refresh. Concurrent calls share one fetch. If a refresh
// fails while the held token is still unexpired, that token is returned
// (the failure is logged), and the next on-demand attempt waits for the
// retry backoff; only when no unexpired token is held is the error returned.
func (s *Source) Token(ctx context.Context) (Token, error) {
	if tok, fresh := s.cached(s.now()); fresh {
		return tok, nil
	}
	tok, err := s.do(ctx, keyToken, s.fetchIfDue)
	if err != nil {
		if cur := s.current(); cur.Valid(s.now()) {
			return cur, nil
		}
		return Token{}, err
	}
	return tok, nil
}

// Refresh fetches a new token because upstream rejected stale. If the
// cached token already differs from stale (another caller refreshed), it is
// returned without fetching. Concurrent calls share one fetch. A failed
// fetch is returned as an error: stale is known to be useless.
func (s *Source) Refresh(ctx context.Context, stale Token) (Token, error) {
	if cur := s.current(); cur.Valid(s.now()) && !cur.Equal(stale) {
		return cur, nil
	}
	return s.do(ctx, keyRefresh, func(ctx context.Context) (Token, error) {
		// Re-check inside the flight: a flight that ended between the check
		// above and joining this one may already have replaced stale.
		if cur := s.current(); cur.Valid(s.now()) && !cur.Equal(stale) {
			return cur, nil
		}
		s.refreshes.Add(1)
		return s.fetchAndStore(ctx)
	})
}

// Run keeps a fresh token until ctx is done: it fetches one at once if none
// is held, then again RefreshBefore ahead of each expiry, retrying failures
// with capped exponential backoff (1s doubling to 5m, jittered). Run it in
// its own goroutine; it returns when ctx is done.
func (s *Source) Run(ctx context.Context) {
	s.log.Debug("ECR token refresher started")
	defer s.log.Debug("ECR token refresher stopped")
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		// Recomputed every round: Token or Refresh may have fetched meanwhile.
		if wait := s.untilNextFetch(s.now()); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		// Errors are logged by the fetch and set the backoff that
		// untilNextFetch honours, so there is nothing more to do here.
		_, _ = s.do(ctx, keyToken, s.fetchIfDue)
	}
}

// Ready reports whether an unexpired token is held, and its expiry; use it
// for readiness probes.
func (s *Source) Ready() (expiresAt time.Time, ok bool) {
	cur := s.current()
	return cur.ExpiresAt, cur.Valid(s.now())
}

// Stats returns the Source's counters.
func (s *Source) Stats() Stats {
	return Stats{
		Fetches:       s.fetches.Load(),
		FetchFailures: s.fetchFailures.Load(),
		Refreshes:     s.refreshes.Load(),
	}
}

// current returns the held token, possibly zero or expired.
func (s *Source) current() Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// cached returns the held token and whether it may be used without a
// fetch at now: it is unexpired and either not yet due for refresh or still
// inside the spacing/backoff window after the last fetch.
func (s *Source) cached(now time.Time) (Token, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := s.cur.Valid(now) && (now.Before(s.refreshAt) || now.Before(s.nextTry))
	return s.cur, fresh
}

// untilNextFetch is how long Run sleeps before its next fetch; <= 0 means now.
func (s *Source) untilNextFetch(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.nextTry
	if s.cur.Valid(now) && s.refreshAt.After(at) {
		at = s.refreshAt
	}
	return at.Sub(now)
}

// fetchIfDue is the keyToken flight: it re-checks the cache, since a flight
// that just ended may have stored a fresh token, and fetches otherwise.
func (s *Source) fetchIfDue(ctx context.Context) (Token, error) {
	if tok, fresh := s.cached(s.now()); fresh {
		return tok, nil
	}
	return s.fetchAndStore(ctx)
}

// do runs fn once for all concurrent callers with the same key, on a
// context detached from ctx (keeping its values) and bounded by the fetch
// timeout, and waits for it or for ctx.
func (s *Source) do(ctx context.Context, key string, fn func(context.Context) (Token, error)) (Token, error) {
	ch := s.group.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.fetchTimeout)
		defer cancel()
		return fn(fctx)
	})
	select {
	case <-ctx.Done():
		return Token{}, fmt.Errorf("auth: waiting for ECR token: %w", context.Cause(ctx))
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		tok, ok := r.Val.(Token)
		if !ok {
			return Token{}, errors.New("auth: internal error: fetch returned no token")
		}
		return tok, nil
	}
}

// fetchAndStore calls the FetchFunc, validates and stores its token, and
// keeps the counters, backoff and logs. Its errors never contain the token.
func (s *Source) fetchAndStore(ctx context.Context) (Token, error) {
	s.fetches.Add(1)
	var tok Token
	err := errors.New("auth: no FetchFunc configured")
	if s.fetch != nil {
		tok, err = s.fetch(ctx)
	}
	now := s.now()
	if err == nil {
		err = checkFetched(tok, now)
	}
	if s.onFetch != nil {
		s.onFetch(err)
	}
	if err != nil {
		s.fetchFailures.Add(1)
		s.mu.Lock()
		s.failures++
		backoff := backoffFor(s.failures)
		s.nextTry = now.Add(backoff)
		valid := s.cur.Valid(now)
		s.mu.Unlock()
		s.log.Warn("ECR token fetch failed", "error", err, "retry_in", backoff,
			"holding_valid_token", valid)
		return Token{}, err
	}

	refreshAt := tok.ExpiresAt.Add(-s.margin(tok.ExpiresAt.Sub(now)))
	s.mu.Lock()
	s.cur = tok
	s.refreshAt = refreshAt
	s.nextTry = now.Add(minFetchInterval)
	s.failures = 0
	s.mu.Unlock()
	s.log.Info("fetched ECR token", "expires_at", tok.ExpiresAt, "refresh_at", refreshAt)
	return tok, nil
}

// checkFetched rejects tokens a FetchFunc should not have returned.
func checkFetched(tok Token, now time.Time) error {
	switch {
	case tok.IsZero():
		return errors.New("auth: fetched ECR token is empty")
	case tok.ExpiresAt.IsZero():
		return errors.New("auth: fetched ECR token has no expiry")
	case !now.Before(tok.ExpiresAt):
		return fmt.Errorf("auth: fetched ECR token already expired at %s", tok.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// margin is how long before expiry a token with the given remaining
// lifetime is refreshed.
func (s *Source) margin(lifetime time.Duration) time.Duration {
	switch {
	case s.refreshBefore <= 0:
		return min(defaultRefreshBefore, lifetime/2)
	case s.refreshBefore >= lifetime:
		return lifetime / 2
	default:
		return s.refreshBefore
	}
}

// backoffFor returns the jittered wait after the n-th consecutive failure:
// backoffMin·2^(n-1) capped at backoffMax, then drawn from [d/2, d) so that
// replicas which failed together do not retry together.
func backoffFor(n int) time.Duration {
	d := backoffMin
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	d = min(d, backoffMax)
	return d/2 + rand.N(d/2)
}
