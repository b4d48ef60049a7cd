// Package testkit holds the small test helpers more than one package's
// tests share: a log buffer safe for concurrent writers and deterministic
// random content. Waits live in internal/testwait, filesystems to fill
// in internal/tmpfs, and a fake ECR per test in fakeecr.Start.
package testkit

import (
	"bytes"
	"math/rand/v2"
	"sync"
)

// SyncBuffer is a bytes.Buffer that a logger writing from several
// goroutines and a test reading it can share.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p under the buffer's lock.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// RandomBytes returns n pseudo-random bytes, the same for the same seed:
// blob content a test can recreate to compare.
func RandomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	rand.NewChaCha8(s).Read(b)
	return b
}
