package cache

import (
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

func randFor(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 99)) }

func digestsOf(infos []Info) []digest.Digest {
	out := make([]digest.Digest, len(infos))
	for i, info := range infos {
		out[i] = info.Digest
	}
	slices.Sort(out)
	return out
}

func nodeDigests(nodes ...*node) []digest.Digest {
	out := make([]digest.Digest, len(nodes))
	for i, n := range nodes {
		out[i] = n.dgst
	}
	slices.Sort(out)
	return out
}

// TestPurge: Purge removes the unit eviction would take, and nothing
// another stored image references; pinned content is refused.
func TestPurge(t *testing.T) {
	t.Parallel()
	a, b, shared := twoImages()
	p := imageNode("P", layerNode("p1", 2000, 500))
	loose := layerNode("loose", 2001, 700)
	_, absent := blob(2002, 10)
	tests := []struct {
		name    string
		target  func() digest.Digest
		removed []*node
		err     error
	}{
		{name: "image sharing a layer", target: func() digest.Digest { return a.dgst },
			removed: []*node{a, a.refs[0], a.refs[2]}},
		{name: "loose blob", target: func() digest.Digest { return loose.dgst }, removed: []*node{loose}},
		{name: "layer of an image", target: func() digest.Digest { return b.refs[2].dgst }, removed: []*node{b.refs[2]}},
		{name: "pinned image", target: func() digest.Digest { return p.dgst }, err: ErrPinned},
		{name: "pinned layer", target: func() digest.Digest { return p.refs[1].dgst }, err: ErrPinned},
		{name: "not stored", target: func() digest.Digest { return absent }, err: ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir, 1<<20)
			for _, n := range []*node{a, b, p, loose} {
				pull(t, s, n)
			}
			mustPin(t, s, p, "p")
			before, err := s.Entries()
			if err != nil {
				t.Fatal(err)
			}
			removed, err := s.Purge(tc.target())
			if tc.err != nil {
				if !errors.Is(err, tc.err) || removed != nil {
					t.Fatalf("Purge = %v, %v; want %v", removed, err, tc.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got, want := digestsOf(removed), nodeDigests(tc.removed...); !slices.Equal(got, want) {
				t.Fatalf("Purge removed %v, want %v", got, want)
			}
			if len(removed) > 0 && removed[0].Digest != tc.target() {
				t.Fatalf("Purge listed %s first, want the purged digest", removed[0].Digest)
			}
			// Everything else is still there.
			after, err := s.Entries()
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(before)-len(tc.removed) {
				t.Fatalf("%d entries after removing %d of %d", len(after), len(tc.removed), len(before))
			}
			for _, n := range tc.removed {
				if stored(s, n) || fileExists(s.blobPath(n.dgst)) {
					t.Fatalf("%s still stored or on disk", n.name)
				}
			}
			if !stored(s, shared) {
				t.Fatal("the layer another image shares was purged")
			}
			if st := s.Stats(); st.Purged != int64(len(tc.removed)) || st.Deletes != 0 {
				t.Fatalf("Stats = %+v, want Purged %d", st, len(tc.removed))
			}
			checkStore(t, s, dir)
			checkWhole(t, s, p)
		})
	}
}

// TestPurgeReaderKeepsReading: a file opened through Get before Purge
// reads whole after it, and the digest can be stored again.
func TestPurgeReaderKeepsReading(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	data, dgst := blob(2100, 300_000)
	mustPut(t, s, data, dgst)
	f, _, err := s.Get(dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(dgst); err != nil {
		t.Fatal(err)
	}
	if fileExists(s.blobPath(dgst)) {
		t.Fatal("the file is still linked after Purge")
	}
	rest, err := io.ReadAll(f)
	if err != nil || !slices.Equal(append(head, rest...), data) {
		t.Fatalf("reader after Purge got %d bytes, %v; want all %d", len(head)+len(rest), err, len(data))
	}
	checkStore(t, s, dir)
	mustPut(t, s, data, dgst)
	readEntry(t, s, dgst, data)
	checkStore(t, s, dir)
}

// TestPurgeUnused: images last used before the cutoff go as units,
// later ones stay, pins always stay; a cutoff in the future removes
// everything not pinned.
func TestPurgeUnused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	a, b, shared := twoImages()
	p := imageNode("P", shared, layerNode("p1", 2200, 500))
	oldLoose := layerNode("old-loose", 2201, 300)
	newLoose := layerNode("new-loose", 2202, 300)
	pull(t, s, p)
	mustPin(t, s, p, "")
	pull(t, s, a)
	fetch(t, s, oldLoose)
	time.Sleep(2 * time.Millisecond)
	cutoff := time.Now()
	time.Sleep(2 * time.Millisecond)
	pull(t, s, b)
	fetch(t, s, newLoose)

	removed, err := s.PurgeUnused(cutoff)
	if err != nil {
		t.Fatal(err)
	}
	// A's layer S is shared with B (and pinned by P): it stays.
	if got, want := digestsOf(removed), nodeDigests(a, a.refs[0], a.refs[2], oldLoose); !slices.Equal(got, want) {
		t.Fatalf("PurgeUnused(cutoff) removed %v, want %v", got, want)
	}
	checkStore(t, s, dir)
	checkWhole(t, s, p)
	checkWhole(t, s, b)
	if !stored(s, newLoose) {
		t.Fatal("a blob used after the cutoff was purged")
	}

	removed, err = s.PurgeUnused(time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := digestsOf(removed), nodeDigests(b, b.refs[0], b.refs[2], newLoose); !slices.Equal(got, want) {
		t.Fatalf("PurgeUnused(future) removed %v, want %v", got, want)
	}
	checkWhole(t, s, p)
	if st := s.Stats(); s.Size() != closureSize(p) || st.PinnedBytes != closureSize(p) || st.Purged != 8 {
		t.Fatalf("after purging all: Size %d, Stats %+v; want only P's %d bytes, 8 purged", s.Size(), st, closureSize(p))
	}
	checkStore(t, s, dir)
	if removed, err := s.PurgeUnused(time.Now().Add(time.Hour)); err != nil || len(removed) != 0 {
		t.Fatalf("PurgeUnused with nothing to purge = %v, %v", removed, err)
	}
}

// TestPurgeUnusedSharedChain: an image whose content is shared only with
// another purged image goes whole; content shared with an unpinned image
// outside the cutoff stays.
func TestPurgeUnusedSharedChain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	base := layerNode("base", 2300, 800)
	amd := imageNode("amd64", base, layerNode("amd", 2301, 500))
	arm := imageNode("arm64", base, layerNode("arm", 2302, 500))
	i1 := indexNode("I1", oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, amd, arm)
	i2 := indexNode("I2", oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, arm)
	pull(t, s, i1)
	pull(t, s, i2)
	removed, err := s.PurgeUnused(time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := digestsOf(removed), nodeDigests(append(closure(i1), i2)...); !slices.Equal(got, want) {
		t.Fatalf("PurgeUnused removed %v, want everything: %v", got, want)
	}
	if s.Size() != 0 {
		t.Fatalf("Size %d after purging everything", s.Size())
	}
	checkStore(t, s, dir)
}

// TestPurgeConcurrent purges and pins while several goroutines pull:
// the bound holds, and once quiet the store is consistent and every
// pinned image is whole.
func TestPurgeConcurrent(t *testing.T) {
	t.Parallel()
	const maxSize = 15_000
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxSize: maxSize, AccessFlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pool := newImagePool(randFor(11), 11)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 6 {
		wg.Go(func() {
			rng := randFor(uint64(g))
			for range 25 {
				if err := pullErr(s, pool.roots[rng.IntN(len(pool.roots))]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var side sync.WaitGroup
	side.Go(func() { // an operator
		rng := randFor(100)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := pool.all[rng.IntN(len(pool.all))]
			var err error
			switch rng.IntN(4) {
			case 0:
				_, err = s.Purge(n.dgst)
				if errors.Is(err, ErrNotFound) || errors.Is(err, ErrPinned) {
					err = nil
				}
			case 1:
				_, err = s.PurgeUnused(time.Now().Add(-time.Duration(rng.IntN(5)) * time.Millisecond))
			case 2:
				if err = s.Pin(n.dgst, "x"); errors.Is(err, ErrIncomplete) {
					err = nil
				}
			case 3:
				if err = s.Unpin(n.dgst); errors.Is(err, ErrNotFound) {
					err = nil
				}
			}
			if err != nil {
				errs <- err
				return
			}
			if size := s.Size(); size > maxSize {
				errs <- errors.New("Size above MaxSize")
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	side.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkStore(t, s, dir)
	pins, err := s.Pins()
	if err != nil {
		t.Fatal(err)
	}
	byDigest := map[digest.Digest]*node{}
	for _, n := range pool.all {
		byDigest[n.dgst] = n
	}
	for _, pi := range pins {
		checkWhole(t, s, byDigest[pi.Digest])
	}
	t.Logf("%d pins at the end; %+v", len(pins), s.Stats())
}
