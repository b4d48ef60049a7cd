package fakeecr

import "testing"

// Start starts a fake for one test, as New does, and closes it when the
// test and its subtests end. It fails the test if the fake cannot start.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	f, err := New(opts)
	if err != nil {
		t.Fatalf("starting the fake ECR: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}
