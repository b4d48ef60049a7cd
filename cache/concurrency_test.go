package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestConcurrentUse hammers one small store with Put, Get, Delete,
// followed downloads and aborts from many goroutines, with the access-time
// flusher running, then checks that the index and the files agree.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	const (
		maxSize    = 40_000
		goroutines = 16
		ops        = 150
	)
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxSize: maxSize, AccessFlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var datas [][]byte
	var dgsts []digest.Digest
	want := map[digest.Digest][]byte{}
	for i := range 30 {
		d, g := blob(uint64(700+i), 500+i*150)
		datas, dgsts = append(datas, d), append(dgsts, g)
		want[g] = d
	}

	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			for range ops {
				i := rng.IntN(len(dgsts))
				if err := randomOp(s, rng.IntN(100), dgsts[i], datas[i]); err != nil {
					errs <- fmt.Errorf("goroutine %d: %w", g, err)
					return
				}
				if size := s.Size(); size > maxSize {
					errs <- fmt.Errorf("Size %d > MaxSize %d", size, maxSize)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	st := s.Stats()
	if st.Commits == 0 || st.Evictions == 0 || st.Hits == 0 {
		t.Fatalf("the test did not exercise the store: %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, maxSize)
	got := indexed(t, s)
	if int64(len(got)) != st.Entries {
		t.Fatalf("reopened index has %d records, store had %d entries", len(got), st.Entries)
	}
	var paths []digest.Digest
	var total int64
	for dgst, size := range got {
		paths = append(paths, dgst)
		total += size
		b, err := os.ReadFile(filepath.Join(dir, blobsDirName, relBlobPath(dgst)))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); digest.NewDigestFromBytes(digest.SHA256, sum[:]) != dgst || !bytes.Equal(b, want[dgst]) {
			t.Fatalf("file of %s has wrong content", dgst)
		}
	}
	assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(paths...))
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
	if total != st.Bytes || s.Size() != total || total > maxSize {
		t.Fatalf("bytes: index %d, before restart %d, after %d, max %d", total, st.Bytes, s.Size(), maxSize)
	}
	if r := s.Stats(); r.Evictions != 0 {
		t.Fatalf("reopen evicted %d entries; the budget was kept", r.Evictions)
	}
}

func randomOp(s *Store, op int, dgst digest.Digest, data []byte) error {
	switch {
	case op < 35:
		return s.Put(dgst, "m", data)
	case op < 70:
		f, info, err := s.Get(dgst)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(b, data) || info.Size != int64(len(data)) {
			return fmt.Errorf("Get(%s): %d bytes, %v", dgst, len(b), err)
		}
		return nil
	case op < 80:
		if err := s.Delete(dgst); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		return nil
	case op < 95:
		return followedDownload(s, dgst, data)
	default:
		w, err := s.Create(dgst, int64(len(data)), "m")
		if err != nil {
			return err
		}
		w.Write(data[:len(data)/2])
		w.Abort(nil)
		return nil
	}
}

// followedDownload writes data in chunks while a follower reads it.
func followedDownload(s *Store, dgst digest.Digest, data []byte) error {
	w, err := s.Create(dgst, int64(len(data)), "m")
	if err != nil {
		return err
	}
	r, err := w.NewReader(context.Background(), 0)
	if err != nil {
		return err
	}
	got := make(chan []byte, 1)
	go func() {
		defer r.Close()
		b, _ := io.ReadAll(r)
		got <- b
	}()
	if err := writeChunks(w, data, 333, 0); err != nil {
		return err
	}
	if _, err := w.Commit(); err != nil {
		return err
	}
	if b := <-got; !bytes.Equal(b, data) {
		return fmt.Errorf("follower of %s got %d bytes, want %d", dgst, len(b), len(data))
	}
	return nil
}

// TestConcurrentSameDigest: many downloads of the same content finish at
// once; all report kept and exactly one file remains.
func TestConcurrentSameDigest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	data, dgst := blob(800, 50_000)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := followedDownload(s, dgst, data); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(dgst))
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
	if st := s.Stats(); st.Entries != 1 || st.Bytes != int64(len(data)) || st.Commits != 1 {
		t.Fatalf("Stats = %+v, want one entry", st)
	}
	readEntry(t, s, dgst, data)
}

// TestConcurrentCommitsStayWithinBudget: commits that each need eviction
// and run at once never push Size past MaxSize.
func TestConcurrentCommitsStayWithinBudget(t *testing.T) {
	t.Parallel()
	const maxSize = 10_000
	s := openStore(t, t.TempDir(), maxSize)
	datas, dgsts := entries(900, 40, 3000)
	stop := make(chan struct{})
	watchErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				watchErr <- nil
				return
			default:
			}
			if size := s.Size(); size > maxSize {
				watchErr <- fmt.Errorf("Size %d > MaxSize %d", size, maxSize)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range datas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Put(dgsts[i], "", datas[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-watchErr; err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Entries != 3 || st.Bytes != 9000 || st.Commits != 40 || st.Evictions != 37 {
		t.Fatalf("Stats = %+v", st)
	}
}
