package cache

import (
	"errors"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestEntriesAndVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	good, goodDgst := blob(1, 1000)
	flipped, flippedDgst := blob(2, 1000)
	short, shortDgst := blob(3, 1000)
	for _, b := range []struct {
		data []byte
		dgst digest.Digest
	}{{good, goodDgst}, {flipped, flippedDgst}, {short, shortDgst}} {
		mustPut(t, s, b.data, b.dgst)
	}
	entries, err := s.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || entries[0].Digest > entries[1].Digest || entries[1].Digest > entries[2].Digest {
		t.Fatalf("Entries = %+v, want 3 sorted by digest", entries)
	}
	corrupt := func(dgst digest.Digest, data []byte) {
		path := s.blobPath(dgst)
		os.Chmod(path, 0o644)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bad := append([]byte(nil), flipped...)
	bad[10] ^= 1
	corrupt(flippedDgst, bad)
	corrupt(shortDgst, short[:999])

	tests := []struct {
		name string
		dgst digest.Digest
		want error // nil: intact
	}{
		{name: "intact", dgst: goodDgst},
		{name: "byte flipped", dgst: flippedDgst, want: ErrDigestMismatch},
		{name: "truncated", dgst: shortDgst, want: ErrSizeMismatch},
		{name: "absent", dgst: digest.FromString("absent"), want: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Verify(tt.dgst)
			if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if st := s.Stats(); st.Hits != 0 {
		t.Errorf("Verify counted %d hits, want none", st.Hits)
	}
}

func TestCheckUnlocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := CheckUnlocked(dir); err != nil {
		t.Fatalf("a directory without an index: %v", err)
	}
	s := openStore(t, dir, 1<<20)
	if err := CheckUnlocked(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("while open: %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := CheckUnlocked(dir); err != nil {
		t.Fatalf("after Close: %v", err)
	}
	// The probe released the lock: the store opens again.
	openStore(t, dir, 1<<20)
}
