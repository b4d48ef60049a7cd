package proxy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// lookups merges concurrent upstream lookups of the same key (a tag's
// answer, say, or a referrers list) into one call whose result every
// caller shares: a caller arriving while the call for its key runs
// joins it instead of asking upstream again. A call leaves the table as
// it ends, so a caller arriving after that starts a fresh one and never
// gets an answer older than its own request.
//
// Each call runs in a goroutine of its own on a context derived from the
// proxy's (not from any caller's) and bounded by timeout: the client
// that started it hanging up does not fail the others, and each caller
// stops waiting when its own context ends.
//
// Tag lookups (taglookup.go) and referrers lookups (referrers.go) each
// have a table.
type lookups[K comparable, V any] struct {
	bg      context.Context // parent of every call: ends when the proxy closes
	timeout time.Duration   // bounds every call
	wg      *sync.WaitGroup // counts calls running, for Proxy.Close
	// separate makes every caller run a call of its own, as before
	// lookups were merged: the baseline of the tag benchmark.
	separate bool
	joins    *atomic.Int64 // counts callers that joined a call; nil: none

	mu    sync.Mutex
	calls map[K]*lookupCall[V]
}

// lookupCall is one call in flight and, once done is closed, its result.
type lookupCall[V any] struct {
	done chan struct{}
	val  V
	err  error
}

// newLookups returns an empty table whose calls run on bg, each bounded
// by timeout and counted in wg; joins, when not nil, counts the callers
// that join a call as they join it.
func newLookups[K comparable, V any](bg context.Context, timeout time.Duration, wg *sync.WaitGroup, joins *atomic.Int64) *lookups[K, V] {
	return &lookups[K, V]{bg: bg, timeout: timeout, wg: wg, joins: joins, calls: make(map[K]*lookupCall[V])}
}

// do returns what fn returned for key, from the call in flight for key
// (joined is then true) or from one it starts. fn gets the call's own
// context. When ctx ends first, do returns ctx's error and the zero V;
// the call goes on for the callers still waiting.
func (l *lookups[K, V]) do(ctx context.Context, key K, fn func(context.Context) (V, error)) (v V, joined bool, err error) {
	c, joined, err := l.join(key, fn)
	if err != nil {
		return v, false, err
	}
	select {
	case <-c.done:
		return c.val, joined, c.err
	case <-ctx.Done():
		return v, joined, ctx.Err()
	}
}

// join returns the call in flight for key, or starts one running fn.
func (l *lookups[K, V]) join(key K, fn func(context.Context) (V, error)) (*lookupCall[V], bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.calls[key]; c != nil {
		if l.joins != nil {
			l.joins.Add(1)
		}
		return c, true, nil
	}
	// The proxy ends bg before it waits for wg: no call starts after.
	if l.bg.Err() != nil {
		return nil, false, shuttingDown()
	}
	c := &lookupCall[V]{done: make(chan struct{})}
	if !l.separate {
		l.calls[key] = c
	}
	l.wg.Add(1)
	go l.run(key, c, fn)
	return c, false, nil
}

// run makes the call and hands its result to every caller.
func (l *lookups[K, V]) run(key K, c *lookupCall[V], fn func(context.Context) (V, error)) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(l.bg, l.timeout)
	defer cancel()
	c.val, c.err = fn(ctx)
	if errors.Is(c.err, context.Canceled) && l.bg.Err() != nil {
		c.err = shuttingDown() // not a client's hang-up: say why
	}
	l.mu.Lock()
	if l.calls[key] == c {
		delete(l.calls, key)
	}
	l.mu.Unlock()
	close(c.done)
}

func shuttingDown() *registry.Error {
	return registry.Errorf(registry.CodeUnavailable, "the mirror is shutting down")
}
