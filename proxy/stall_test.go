package proxy

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// timerArmed reports whether a timer of clk is running now.
func timerArmed(clk *clockwork.FakeClock) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return clk.BlockUntilContext(ctx, 1) == nil
}

// waitArmed waits until a timer of clk is running.
func waitArmed(t *testing.T, clk *clockwork.FakeClock) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testwait.HangGuard)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("no stall timer started: %v", err)
	}
}

// The stall clock runs only while a Read waits on upstream, and fires
// only when a whole timeout passes within one Read: a body that keeps
// sending just under the timeout is never cut, a consumer slow between
// Reads is no stall (a download waits for the bandwidth cap, and writes
// to disk, between Reads: copyAttempt), and a body that stops is
// cancelled with errStalled.
func TestStallReader(t *testing.T) {
	t.Parallel()
	clk := clockwork.NewFakeClock()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	context.AfterFunc(ctx, func() { pw.CloseWithError(context.Cause(ctx)) })
	const timeout = time.Minute
	r := newStallReader(pr, clk, timeout, cancel)
	reads := make(chan error)
	buf := make([]byte, 8)
	read := func() { go func() { _, err := r.Read(buf); reads <- err }() }
	for i := range 4 {
		read()
		waitArmed(t, clk) // the Read waits on upstream
		clk.Advance(timeout - time.Nanosecond)
		if !timerArmed(clk) {
			t.Fatalf("read %d: the stall fired before its timeout", i)
		}
		if _, err := pw.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := <-reads; err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		// Between Reads the clock stands still, however long the
		// consumer takes.
		if timerArmed(clk) {
			t.Fatalf("after read %d the stall clock runs while nobody reads", i)
		}
		clk.Advance(10 * timeout)
	}
	read()
	waitArmed(t, clk)
	clk.Advance(timeout)
	if err := <-reads; !errors.Is(err, errStalled) {
		t.Fatalf("read ended with %v, want errStalled", err)
	}
	if !errors.Is(context.Cause(ctx), errStalled) {
		t.Fatalf("context cause = %v", context.Cause(ctx))
	}
}

// A watch started before the response covers the wait for it, and stop
// stops it for good.
func TestStallWatch(t *testing.T) {
	t.Parallel()
	clk := clockwork.NewFakeClock()
	const timeout = time.Minute
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	w := newStallWatch(clk, timeout, cancel)
	if !timerArmed(clk) {
		t.Fatal("a watch with no response yet is not running")
	}
	clk.Advance(timeout)
	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), errStalled) {
			t.Fatalf("cause %v", context.Cause(ctx))
		}
	case <-time.After(testwait.HangGuard):
		t.Fatal("a watch with no response did not fire")
	}
	w.stop()

	stopped := newStallWatch(clk, timeout, func(error) { t.Error("a stopped watch fired") })
	stopped.stop()
	if timerArmed(clk) {
		t.Fatal("a stopped watch still runs")
	}
}
