package auth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
)

// fakeClock is an injectable clock advanced by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeFetcher hands out tokens "AWS:pw-<n>" living lifetime from now(),
// or fails while failing is set. It counts calls.
type fakeFetcher struct {
	now      func() time.Time
	lifetime time.Duration
	delay    time.Duration // sleep before answering (fake time under synctest)

	calls   atomic.Int64
	failing atomic.Bool

	mu    sync.Mutex
	times []time.Time // when each call happened
}

func (f *fakeFetcher) Fetch(ctx context.Context) (auth.Token, error) {
	n := f.calls.Add(1)
	f.mu.Lock()
	f.times = append(f.times, f.now())
	f.mu.Unlock()
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return auth.Token{}, ctx.Err()
		}
	}
	if f.failing.Load() {
		return auth.Token{}, errors.New("fake ECR unavailable")
	}
	return auth.NewToken(b64(fmt.Sprintf("AWS:pw-%d", n)), f.now().Add(f.lifetime)), nil
}

func (f *fakeFetcher) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times...)
}

func TestSourceCoalescesConcurrentFetches(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{now: time.Now, lifetime: 12 * time.Hour, delay: time.Second}
		src := auth.NewSource(f.Fetch, auth.Options{})

		const callers = 100
		toks := make([]auth.Token, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				tok, err := src.Token(t.Context())
				if err != nil {
					t.Errorf("Token: %v", err)
				}
				toks[i] = tok
			})
		}
		wg.Wait()
		if n := f.calls.Load(); n != 1 {
			t.Fatalf("%d concurrent Token calls made %d fetches, want 1", callers, n)
		}
		for i, tok := range toks {
			if !tok.Equal(toks[0]) || tok.IsZero() {
				t.Fatalf("caller %d got %v, want the shared token", i, tok)
			}
		}
		if st := src.Stats(); st != (auth.Stats{Fetches: 1}) {
			t.Errorf("Stats = %+v", st)
		}
		// Cached now: no further fetch.
		if _, err := src.Token(t.Context()); err != nil || f.calls.Load() != 1 {
			t.Errorf("cached Token: err=%v fetches=%d", err, f.calls.Load())
		}
	})
}

func TestSourceRefreshesBeforeExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		lifetime      time.Duration
		refreshBefore time.Duration
		refreshAfter  time.Duration // age at which the token is due
	}{
		{name: "default margin is 1h of 12h", lifetime: 12 * time.Hour, refreshAfter: 11 * time.Hour},
		{name: "default margin is half of a short lifetime", lifetime: 30 * time.Minute, refreshAfter: 15 * time.Minute},
		{name: "explicit margin", lifetime: 12 * time.Hour, refreshBefore: 2 * time.Hour, refreshAfter: 10 * time.Hour},
		{name: "margin beyond lifetime falls back to half", lifetime: 12 * time.Hour, refreshBefore: 24 * time.Hour, refreshAfter: 6 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newFakeClock()
			f := &fakeFetcher{now: clk.Now, lifetime: tt.lifetime}
			src := auth.NewSource(f.Fetch, auth.Options{Now: clk.Now, RefreshBefore: tt.refreshBefore})
			ctx := t.Context()

			first, err := src.Token(ctx)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			clk.Advance(tt.refreshAfter - time.Second)
			if tok, _ := src.Token(ctx); !tok.Equal(first) || f.calls.Load() != 1 {
				t.Fatalf("just before the refresh point: fetches=%d, want the first token and 1 fetch", f.calls.Load())
			}
			clk.Advance(2 * time.Second)
			second, err := src.Token(ctx)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if second.Equal(first) || f.calls.Load() != 2 {
				t.Fatalf("just after the refresh point: fetches=%d, want a new token and 2 fetches", f.calls.Load())
			}
			if exp, ok := src.Ready(); !ok || !exp.Equal(second.ExpiresAt) {
				t.Errorf("Ready = %v, %v", exp, ok)
			}
		})
	}
}

func TestSourceFailures(t *testing.T) {
	t.Parallel()
	t.Run("no token and fetch fails", func(t *testing.T) {
		t.Parallel()
		clk := newFakeClock()
		f := &fakeFetcher{now: clk.Now, lifetime: time.Hour}
		f.failing.Store(true)
		src := auth.NewSource(f.Fetch, auth.Options{Now: clk.Now})
		if _, err := src.Token(t.Context()); err == nil || !strings.Contains(err.Error(), "fake ECR unavailable") {
			t.Fatalf("Token error = %v, want the fetch error", err)
		}
		if _, ok := src.Ready(); ok {
			t.Error("Ready with no token")
		}
		// Without a usable token every call tries again.
		_, _ = src.Token(t.Context())
		if st := src.Stats(); st.Fetches != 2 || st.FetchFailures != 2 {
			t.Errorf("Stats = %+v, want 2 fetches, 2 failures", st)
		}
	})

	t.Run("refresh fails while the token is still valid", func(t *testing.T) {
		t.Parallel()
		clk := newFakeClock()
		f := &fakeFetcher{now: clk.Now, lifetime: 12 * time.Hour}
		var logs bytes.Buffer
		src := auth.NewSource(f.Fetch, auth.Options{Now: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		first, err := src.Token(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		f.failing.Store(true)
		clk.Advance(11*time.Hour + time.Minute) // due, not expired
		got, err := src.Token(t.Context())
		if err != nil || !got.Equal(first) {
			t.Fatalf("Token = %v, %v; want the still-valid token", got, err)
		}
		// Within the retry backoff (>= 0.5s) no new attempt is made.
		_, _ = src.Token(t.Context())
		if n := f.calls.Load(); n != 2 {
			t.Errorf("fetches = %d, want 2 (no retry inside the backoff)", n)
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "fake ECR unavailable") {
			t.Errorf("failure not logged at warn:\n%s", logs.String())
		}
		clk.Advance(time.Hour) // expired now
		if _, err := src.Token(t.Context()); err == nil {
			t.Fatal("Token after expiry with failing fetches: want error")
		}
		if _, ok := src.Ready(); ok {
			t.Error("Ready with an expired token")
		}
	})

	bad := []struct {
		name    string
		tok     func(now time.Time) auth.Token
		wantErr string
	}{
		{"empty token", func(now time.Time) auth.Token { return auth.NewToken("", now.Add(time.Hour)) }, "empty"},
		{"no expiry", func(time.Time) auth.Token { return auth.NewToken("YQ==", time.Time{}) }, "no expiry"},
		{"already expired", func(now time.Time) auth.Token { return auth.NewToken("YQ==", now.Add(-time.Second)) }, "already expired"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newFakeClock()
			src := auth.NewSource(func(context.Context) (auth.Token, error) { return tt.tok(clk.Now()), nil }, auth.Options{Now: clk.Now})
			_, err := src.Token(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Token error = %v, want one containing %q", err, tt.wantErr)
			}
			if st := src.Stats(); st.FetchFailures != 1 {
				t.Errorf("Stats = %+v", st)
			}
		})
	}

	t.Run("nil FetchFunc", func(t *testing.T) {
		t.Parallel()
		if _, err := auth.NewSource(nil, auth.Options{}).Token(t.Context()); err == nil {
			t.Fatal("want error")
		}
	})
}

func TestSourceRefresh(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{now: time.Now, lifetime: 12 * time.Hour, delay: time.Second}
		src := auth.NewSource(f.Fetch, auth.Options{})
		ctx := t.Context()
		stale, err := src.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}

		const callers = 100
		toks := make([]auth.Token, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				tok, err := src.Refresh(ctx, stale)
				if err != nil {
					t.Errorf("Refresh: %v", err)
				}
				toks[i] = tok
			})
		}
		wg.Wait()
		if n := f.calls.Load(); n != 2 {
			t.Fatalf("fetches = %d, want 2 (initial + one coalesced refresh)", n)
		}
		for _, tok := range toks {
			if tok.Equal(stale) || !tok.Equal(toks[0]) {
				t.Fatalf("Refresh returned %v, want the one new token", tok)
			}
		}

		// Already refreshed: a late Refresh(stale) gets the cached token, no fetch.
		tok, err := src.Refresh(ctx, stale)
		if err != nil || !tok.Equal(toks[0]) || f.calls.Load() != 2 {
			t.Fatalf("late Refresh(stale) = %v, %v with %d fetches; want the cached token, no fetch", tok, err, f.calls.Load())
		}
		if st := src.Stats(); st.Refreshes != 1 || st.Fetches != 2 {
			t.Errorf("Stats = %+v, want 1 refresh, 2 fetches", st)
		}

		// Rejecting the current token forces a fetch even though it is fresh.
		third, err := src.Refresh(ctx, toks[0])
		if err != nil || third.Equal(toks[0]) || f.calls.Load() != 3 {
			t.Fatalf("Refresh(current) = %v, %v with %d fetches; want a new token", third, err, f.calls.Load())
		}

		// A failed forced refresh is an error, not the rejected token.
		f.failing.Store(true)
		if _, err := src.Refresh(ctx, third); err == nil {
			t.Fatal("Refresh with failing fetch: want error")
		}
	})
}

func TestSourceCallerCancellationDoesNotFailOthers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{now: time.Now, lifetime: 12 * time.Hour, delay: time.Second}
		src := auth.NewSource(f.Fetch, auth.Options{})

		impatient, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := src.Token(impatient)
			errc <- err
		}()
		synctest.Wait() // the impatient caller started the fetch
		var other auth.Token
		var otherErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			other, otherErr = src.Token(t.Context())
		}()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("impatient caller: err = %v, want context.Canceled", err)
		}
		<-done
		if otherErr != nil || other.IsZero() {
			t.Fatalf("patient caller: %v, %v; want the token", other, otherErr)
		}
		if n := f.calls.Load(); n != 1 {
			t.Errorf("fetches = %d, want 1", n)
		}
	})
}

func TestSourceRun(t *testing.T) {
	t.Parallel()
	t.Run("keeps the token fresh and stops on cancel", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			f := &fakeFetcher{now: time.Now, lifetime: 12 * time.Hour}
			src := auth.NewSource(f.Fetch, auth.Options{})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				src.Run(ctx)
			}()

			synctest.Wait()
			if n := f.calls.Load(); n != 1 {
				t.Fatalf("after start: fetches = %d, want 1", n)
			}
			if _, ok := src.Ready(); !ok {
				t.Fatal("not Ready after Run's first fetch")
			}
			time.Sleep(11*time.Hour - time.Minute)
			if n := f.calls.Load(); n != 1 {
				t.Fatalf("before the refresh point: fetches = %d, want 1", n)
			}
			time.Sleep(2 * time.Minute)
			if n := f.calls.Load(); n != 2 {
				t.Fatalf("after the refresh point: fetches = %d, want 2", n)
			}
			time.Sleep(3 * 24 * time.Hour)
			// One fetch every 11h: at 0, 11h, 22h, ... 77h.
			if n := f.calls.Load(); n != 8 {
				t.Errorf("after 3 days: fetches = %d, want 8", n)
			}
			for i, at := range f.callTimes() {
				if want := start.Add(time.Duration(i) * 11 * time.Hour); !at.Equal(want) {
					t.Errorf("fetch %d at +%v, want +%v", i, at.Sub(start), want.Sub(start))
				}
			}

			cancel()
			synctest.Wait()
			select {
			case <-done:
			default:
				t.Fatal("Run did not return after cancel")
			}
		})
	})

	t.Run("retries failures with capped exponential backoff", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			f := &fakeFetcher{now: time.Now, lifetime: 12 * time.Hour}
			f.failing.Store(true)
			src := auth.NewSource(f.Fetch, auth.Options{})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			go src.Run(ctx)

			time.Sleep(2 * time.Hour)
			f.failing.Store(false)
			time.Sleep(10 * time.Minute) // past the longest backoff
			if _, ok := src.Ready(); !ok {
				t.Fatal("not Ready after the fetcher recovered")
			}
			times := f.callTimes()
			for i := 1; i < len(times); i++ {
				gap := times[i].Sub(times[i-1])
				full := time.Second
				for j := 1; j < i && full < 5*time.Minute; j++ {
					full *= 2
				}
				full = min(full, 5*time.Minute)
				if gap < full/2 || gap >= full {
					t.Errorf("retry %d after %v, want in [%v, %v)", i, gap, full/2, full)
				}
			}
			if st := src.Stats(); st.FetchFailures == 0 || st.FetchFailures+1 != st.Fetches {
				t.Errorf("Stats = %+v, want all but the last fetch failed", st)
			}
		})
	})

	t.Run("stops while a fetch hangs", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			hang := func(ctx context.Context) (auth.Token, error) {
				<-ctx.Done() // ended by the fetch timeout
				return auth.Token{}, ctx.Err()
			}
			src := auth.NewSource(hang, auth.Options{FetchTimeout: time.Minute})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				src.Run(ctx)
			}()
			synctest.Wait()
			cancel()
			synctest.Wait()
			select {
			case <-done:
			default:
				t.Fatal("Run did not return after cancel")
			}
			// The detached fetch itself ends at its FetchTimeout.
			time.Sleep(2 * time.Minute)
			if st := src.Stats(); st.FetchFailures != 1 {
				t.Errorf("Stats = %+v, want the timed-out fetch counted as failed", st)
			}
		})
	})
}

// OnFetch hears every fetch: nil for a usable token, the error for a
// failed fetch or an unusable token.
func TestSourceOnFetch(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	f := &fakeFetcher{now: clk.Now, lifetime: 12 * time.Hour}
	var mu sync.Mutex
	var heard []error
	src := auth.NewSource(f.Fetch, auth.Options{Now: clk.Now, OnFetch: func(err error) {
		mu.Lock()
		heard = append(heard, err)
		mu.Unlock()
	}})
	ctx := context.Background()
	if _, err := src.Token(ctx); err != nil {
		t.Fatal(err)
	}
	f.failing.Store(true)
	clk.Advance(13 * time.Hour) // expired: the next Token fetches
	if _, err := src.Token(ctx); err == nil {
		t.Fatal("Token succeeded with the fetcher failing")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 2 || heard[0] != nil || heard[1] == nil || !strings.Contains(heard[1].Error(), "fake ECR unavailable") {
		t.Fatalf("OnFetch heard %v, want nil then the fetch error", heard)
	}
}
