package fakeecr

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// A Link relays until black-holed; then requests on new and on open
// connections get nothing until their deadline, and once the black hole
// is lifted traffic flows again.
func TestLinkBlackHole(t *testing.T) {
	t.Parallel()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := NewLink(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.URL()+"/v2/", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusUnauthorized { // no token: the fake's 401
			t.Errorf("through the link: status %d, want 401", resp.StatusCode)
		}
		return nil
	}
	if err := get(5 * time.Second); err != nil {
		t.Fatalf("open link: %v", err)
	}

	l.SetBlackHole(true)
	l.SetBlackHole(true) // idempotent
	for _, name := range []string{"open connection", "new connection"} {
		start := time.Now()
		err := get(200 * time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("black-holed, %s: %v, want the deadline", name, err)
		}
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Fatalf("black-holed, %s: failed after %v, before the deadline", name, d)
		}
	}

	l.SetBlackHole(false)
	l.SetBlackHole(false)
	if err := get(5 * time.Second); err != nil {
		t.Fatalf("after lifting the black hole: %v", err)
	}
	l.Close()
	l.Close()
	if err := get(5 * time.Second); err == nil {
		t.Fatal("request through a closed link succeeded")
	}
}
