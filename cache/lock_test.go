package cache

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// A directory lock that lets go (a forked child's copy of Badger's
// descriptor, closed by its exec) delays the open; one that stays, or any
// other error, fails it.
func TestOpenLockedWaitsOutAPassingLock(t *testing.T) {
	t.Parallel()
	lockErr := fmt.Errorf("Cannot acquire directory lock on %q: %w", "index", syscall.EWOULDBLOCK)
	tests := []struct {
		name      string
		failures  int // attempts that fail before one succeeds; -1: all
		err       error
		wantCalls int // -1: more than one
		wantErr   bool
	}{
		{name: "free", failures: 0, err: lockErr, wantCalls: 1},
		{name: "lock let go", failures: 3, err: lockErr, wantCalls: 4},
		{name: "lock held", failures: -1, err: lockErr, wantCalls: -1, wantErr: true},
		{name: "other error", failures: -1, err: errors.New("corrupt manifest"), wantCalls: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			calls := 0
			settle := lockSettle
			if tt.failures < 0 {
				settle = heldLockSettle // it fails in the end anyway
			}
			db, err := openLocked(settle, func() (*badger.DB, error) {
				calls++
				if tt.failures < 0 || calls <= tt.failures {
					return nil, tt.err
				}
				return nil, nil
			})
			if db != nil || (err != nil) != tt.wantErr {
				t.Fatalf("openLocked: %v, want error %v", err, tt.wantErr)
			}
			if tt.wantCalls >= 0 && calls != tt.wantCalls || tt.wantCalls < 0 && calls < 2 {
				t.Errorf("%d attempts, want %d (-1: several)", calls, tt.wantCalls)
			}
		})
	}
}

// Badger's real refusal is recognised as a lock: a second Open of a
// directory a store holds fails, naming the lock, once lockSettle passed.
func TestOpenOfAHeldDirectoryFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(Options{Dir: dir, MaxSize: 1 << 20, lockSettle: heldLockSettle})
	if err == nil || !isDirLocked(err) {
		t.Fatalf("second Open: %v, want Badger's directory lock error", err)
	}
}

// heldLockSettle replaces lockSettle in tests that open a directory a
// store holds on purpose: the open fails either way, only sooner.
const heldLockSettle = 200 * time.Millisecond
