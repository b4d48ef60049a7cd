// Package testwait waits in tests for an event to happen, never for a
// duration to pass: the one place that decides how long a test may hang
// before it is called stuck.
package testwait

import (
	"testing"
	"time"
)

// HangGuard is how long Until polls before failing the test. It is no
// assertion about speed: passing tests never wait it out, so it can be
// long enough for the busiest machine.
const HangGuard = time.Minute

// Until polls cond until it holds, failing t (naming what it waited for)
// once HangGuard has passed.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(HangGuard); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: it never happened", HangGuard, what)
		}
	}
}
