package testkit

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

func TestRandomBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		seedA     uint64
		seedB     uint64
		n         int
		wantEqual bool
	}{
		{name: "same seed, same bytes", seedA: 7, seedB: 7, n: 4096, wantEqual: true},
		{name: "other seed, other bytes", seedA: 7, seedB: 8, n: 4096, wantEqual: false},
		{name: "seeds differing in the second byte", seedA: 1, seedB: 257, n: 64, wantEqual: false},
		{name: "empty", seedA: 1, seedB: 2, n: 0, wantEqual: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := RandomBytes(tt.seedA, tt.n), RandomBytes(tt.seedB, tt.n)
			if len(a) != tt.n || len(b) != tt.n {
				t.Fatalf("lengths %d, %d; want %d", len(a), len(b), tt.n)
			}
			if got := bytes.Equal(a, b); got != tt.wantEqual {
				t.Fatalf("RandomBytes(%d) == RandomBytes(%d): %v, want %v", tt.seedA, tt.seedB, got, tt.wantEqual)
			}
		})
	}
}

func TestSyncBufferKeepsEveryConcurrentWrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		writers int
		lines   int
	}{
		{name: "one writer", writers: 1, lines: 10},
		{name: "many writers", writers: 8, lines: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b SyncBuffer
			var wg sync.WaitGroup
			for range tt.writers {
				wg.Go(func() {
					for range tt.lines {
						b.Write([]byte("line\n"))
						_ = b.String()
					}
				})
			}
			wg.Wait()
			if got, want := strings.Count(b.String(), "line\n"), tt.writers*tt.lines; got != want {
				t.Fatalf("%d lines written, want %d", got, want)
			}
		})
	}
}
