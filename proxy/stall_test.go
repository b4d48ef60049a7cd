package proxy

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// A body that keeps sending is never cut; one that stops is cancelled
// with errStalled after the timeout.
func TestStallReader(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	const timeout = 100 * time.Millisecond
	r := newStallReader(pr, timeout, cancel)
	go func() {
		// Four sends spaced under the timeout, then silence.
		for range 4 {
			time.Sleep(timeout / 2)
			pw.Write([]byte("x"))
		}
		<-ctx.Done()
		pw.CloseWithError(context.Cause(ctx))
	}()
	buf := make([]byte, 8)
	var got int
	for {
		n, err := r.Read(buf)
		got += n
		if err != nil {
			if !errors.Is(err, errStalled) {
				t.Fatalf("read ended with %v, want errStalled", err)
			}
			break
		}
	}
	if got != 4 {
		t.Fatalf("read %d bytes before the stall, want 4", got)
	}
	if !errors.Is(context.Cause(ctx), errStalled) {
		t.Fatalf("context cause = %v", context.Cause(ctx))
	}
}
