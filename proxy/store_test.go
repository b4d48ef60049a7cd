package proxy

import (
	"maps"
	"os"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

// countingStore is a second Store: it counts the proxy's calls per method
// and passes them on to the store it wraps.
type countingStore struct {
	next Store

	mu    sync.Mutex
	calls map[string]int
}

func newCountingStore(next Store) *countingStore {
	return &countingStore{next: next, calls: make(map[string]int)}
}

func (s *countingStore) count(method string) {
	s.mu.Lock()
	s.calls[method]++
	s.mu.Unlock()
}

// snapshot returns the calls counted so far.
func (s *countingStore) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

func (s *countingStore) Stat(dgst digest.Digest) (cache.Info, error) {
	s.count("Stat")
	return s.next.Stat(dgst)
}

func (s *countingStore) Get(dgst digest.Digest) (*os.File, cache.Info, error) {
	s.count("Get")
	return s.next.Get(dgst)
}

func (s *countingStore) Create(dgst digest.Digest, size int64, mediaType string) (*cache.Writer, error) {
	s.count("Create")
	return s.next.Create(dgst, size, mediaType)
}

func (s *countingStore) Put(dgst digest.Digest, mediaType string, data []byte) error {
	s.count("Put")
	return s.next.Put(dgst, mediaType, data)
}

func (s *countingStore) SetMediaType(dgst digest.Digest, mediaType string) (bool, error) {
	s.count("SetMediaType")
	return s.next.SetMediaType(dgst, mediaType)
}

func (s *countingStore) MaxSize() int64 {
	s.count("MaxSize")
	return s.next.MaxSize()
}

func (s *countingStore) Link(repo cache.Repo, dgst digest.Digest) error {
	s.count("Link")
	return s.next.Link(repo, dgst)
}

func (s *countingStore) Linked(repo cache.Repo, dgst digest.Digest) bool {
	s.count("Linked")
	return s.next.Linked(repo, dgst)
}

func (s *countingStore) PutTag(repo cache.Repo, tag, accept string, rec cache.TagRecord) error {
	s.count("PutTag")
	return s.next.PutTag(repo, tag, accept, rec)
}

func (s *countingStore) GetTag(repo cache.Repo, tag, accept string) (cache.TagRecord, error) {
	s.count("GetTag")
	return s.next.GetTag(repo, tag, accept)
}

func (s *countingStore) PutReferrers(k cache.ReferrersKey, rec cache.ReferrersRecord) error {
	s.count("PutReferrers")
	return s.next.PutReferrers(k, rec)
}

func (s *countingStore) GetReferrers(k cache.ReferrersKey) (cache.ReferrersRecord, error) {
	s.count("GetReferrers")
	return s.next.GetReferrers(k)
}

// The proxy works through its Store interface alone: behind a counting
// decorator, a first pull writes each piece of the image once and a
// second one reads each from the store, writing nothing.
func TestProxyUsesAnyStore(t *testing.T) {
	t.Parallel()
	var counting *countingStore
	e := newEnv(t, envOptions{wrapStore: func(s *cache.Store) Store {
		counting = newCountingStore(s)
		return counting
	}})
	img := putImage(e.fake, "team/app", "v1", 71)
	steps := []struct {
		name string
		want map[string]int // calls made during the step, of these methods
	}{
		// The manifest comes whole (Put), config and layer stream (Create).
		{name: "first pull", want: map[string]int{"Create": 2, "Put": 1}},
		// Every piece is a hit: read from the store, nothing written.
		{name: "second pull", want: map[string]int{"Create": 0, "Put": 0, "Get": 3}},
	}
	for _, step := range steps {
		before := counting.snapshot()
		e.pull(t, "team/app", "v1", img)
		after := counting.snapshot()
		for method, want := range step.want {
			if got := after[method] - before[method]; got != want {
				t.Errorf("%s: %d calls of %s, want %d (all calls: %v)", step.name, got, method, want, after)
			}
		}
	}
	for _, d := range []digest.Digest{img.manifest, img.config, img.layer} {
		if _, err := e.store.Stat(d); err != nil {
			t.Errorf("%s is not in the store underneath: %v", d, err)
		}
	}
}
