package cache

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// entries makes n blobs of size bytes each.
func entries(seed uint64, n, size int) ([][]byte, []digest.Digest) {
	datas := make([][]byte, n)
	dgsts := make([]digest.Digest, n)
	for i := range n {
		datas[i], dgsts[i] = blob(seed+uint64(i), size)
	}
	return datas, dgsts
}

// present reports which of dgsts the store holds, as a string of 0/1 for
// readable failures.
func present(s *Store, dgsts []digest.Digest) string {
	out := make([]byte, len(dgsts))
	for i, d := range dgsts {
		out[i] = '0'
		if _, err := s.Stat(d); err == nil {
			out[i] = '1'
		}
	}
	return string(out)
}

func TestEvictionLRU(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// gets are indexes read (in order) after putting entries 0..2.
		gets []int
		// want is which of entries 0..4 remain after putting 3 and 4.
		want string
	}{
		{"insertion order", nil, "00111"},
		{"get oldest", []int{0}, "10011"},
		{"get middle", []int{1}, "01011"},
		{"get all, middle last", []int{2, 0, 1}, "01011"},
		{"get all, newest last", []int{1, 0, 2}, "00111"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir, 3000)
			datas, dgsts := entries(100, 5, 1000)
			for i := range 3 {
				mustPut(t, s, datas[i], dgsts[i])
			}
			for _, i := range tc.gets {
				readEntry(t, s, dgsts[i], datas[i])
			}
			for i := 3; i < 5; i++ {
				mustPut(t, s, datas[i], dgsts[i])
				if s.Size() > s.MaxSize() {
					t.Fatalf("Size %d > MaxSize %d", s.Size(), s.MaxSize())
				}
			}
			if got := present(s, dgsts); got != tc.want {
				t.Fatalf("present = %s, want %s", got, tc.want)
			}
			var kept []digest.Digest
			for i, d := range dgsts {
				if tc.want[i] == '1' {
					kept = append(kept, d)
					readEntry(t, s, d, datas[i])
				}
			}
			assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(kept...))
			if got := len(indexed(t, s)); got != 3 {
				t.Fatalf("index has %d records, want 3", got)
			}
			if st := s.Stats(); st.Evictions != 2 || st.EvictedBytes != 2000 || st.Bytes != 3000 || st.Entries != 3 {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

func TestEvictionMultipleVictims(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 3000)
	datas, dgsts := entries(200, 3, 1000)
	for i := range datas {
		mustPut(t, s, datas[i], dgsts[i])
	}
	big, bigDgst := blob(299, 2500)
	mustPut(t, s, big, bigDgst)
	if got := present(s, append(dgsts, bigDgst)); got != "0001" {
		t.Fatalf("present = %s, want only the big entry", got)
	}
	assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(bigDgst))
	if s.Size() != 2500 {
		t.Fatalf("Size = %d, want 2500", s.Size())
	}

	// Exactly MaxSize fits; one byte more does not.
	exact, exactDgst := blob(300, 3000)
	mustPut(t, s, exact, exactDgst)
	readEntry(t, s, exactDgst, exact)
	over, overDgst := blob(301, 3001)
	w, _ := s.Create(overDgst, -1, "")
	w.Write(over)
	if kept, err := w.Commit(); kept || err != nil {
		t.Fatalf("Commit of MaxSize+1 bytes = %v, %v; want false, nil", kept, err)
	}
	// The too-large entry evicted nothing.
	readEntry(t, s, exactDgst, exact)
	assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(exactDgst))
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
}

// TestRestartKeepsLRUOrder: access order survives Close and Open, and the
// next eviction follows it.
func TestRestartKeepsLRUOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	datas, dgsts := entries(300, 6, 1000)
	s := openStore(t, dir, 4000)
	for i := range 4 {
		mustPut(t, s, datas[i], dgsts[i])
	}
	// Recency now, oldest first: 1, 3, 0, 2.
	readEntry(t, s, dgsts[0], datas[0])
	readEntry(t, s, dgsts[2], datas[2])
	accessed, _ := s.Stat(dgsts[2])
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, 4000)
	if got := present(s, dgsts); got != "111100" {
		t.Fatalf("after reopen present = %s", got)
	}
	if info, _ := s.Stat(dgsts[2]); !info.LastAccess.Equal(accessed.LastAccess) {
		t.Fatalf("LastAccess after reopen = %v, want %v", info.LastAccess, accessed.LastAccess)
	}
	if got := indexed(t, s); len(got) != 4 || got[dgsts[3]] != 1000 {
		t.Fatalf("index after reopen = %v", got)
	}
	mustPut(t, s, datas[4], dgsts[4])
	if got := present(s, dgsts); got != "101110" {
		t.Fatalf("after first eviction present = %s, want 1 evicted first", got)
	}
	mustPut(t, s, datas[5], dgsts[5])
	if got := present(s, dgsts); got != "101011" {
		t.Fatalf("after second eviction present = %s, want 3 evicted next", got)
	}
	for i, d := range dgsts {
		if i != 1 && i != 3 {
			readEntry(t, s, d, datas[i])
		}
	}
}

// TestAccessTimesFlushedInBackground: the flusher persists Get's access
// times without waiting for Close.
func TestAccessTimesFlushedInBackground(t *testing.T) {
	t.Parallel()
	s, err := Open(Options{Dir: t.TempDir(), MaxSize: 1 << 20, AccessFlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, dgst := blob(400, 100)
	mustPut(t, s, data, dgst)
	readEntry(t, s, dgst, data)
	info, _ := s.Stat(dgst)
	deadline := time.Now().Add(time.Minute)
	for {
		recs, _, err := loadIndex(s.db)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 1 && recs[0].e.lastAccess == info.LastAccess.UnixNano() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("access time %v never persisted; index has %+v", info.LastAccess, recs[0].e)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDeletedEntryNotResurrectedByFlush: a dirty access time of a deleted
// entry must not bring its record back.
func TestDeletedEntryNotResurrectedByFlush(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	data, dgst := blob(401, 100)
	mustPut(t, s, data, dgst)
	readEntry(t, s, dgst, data)
	if err := s.Delete(dgst); err != nil {
		t.Fatal(err)
	}
	if err := s.flushAccess(); err != nil {
		t.Fatal(err)
	}
	if got := indexed(t, s); len(got) != 0 {
		t.Fatalf("index after Delete and flush = %v", got)
	}
}

func TestBudgetLoweredBetweenRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	datas, dgsts := entries(500, 4, 1000)
	s := openStore(t, dir, 4000)
	for i := range datas {
		mustPut(t, s, datas[i], dgsts[i])
	}
	readEntry(t, s, dgsts[0], datas[0])
	s.Close()

	var logs testkit.SyncBuffer
	s, err := Open(Options{Dir: dir, MaxSize: 2500, AccessFlushInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := present(s, dgsts); got != "1001" {
		t.Fatalf("present = %s, want the two most recent", got)
	}
	// Never silently: how much went, and why.
	for _, want := range []string{"budget is smaller than the stored content", "max_size=2500", "stored_bytes=4000",
		"evicted_entries=2", "evicted_bytes=2000"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("warning %q lacks %q", logs.String(), want)
		}
	}
	if s.Size() != 2000 || s.Stats().Evictions != 2 {
		t.Fatalf("Size = %d, Stats = %+v", s.Size(), s.Stats())
	}
	assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(dgsts[0], dgsts[3]))
	if got := indexed(t, s); len(got) != 2 {
		t.Fatalf("index = %v, want 2 records", got)
	}
}
