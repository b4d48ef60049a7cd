package cache

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// Repo names a repository of an upstream registry: what content is
// linked to (Store.Link).
type Repo struct {
	// Registry is the upstream registry's host, e.g.
	// 123456789012.dkr.ecr.eu-west-1.amazonaws.com. "" stands for the
	// mirror's main upstream, for links made where its host was not
	// known (an import into a stopped mirror's directory, links derived
	// from an older version's tag records).
	Registry string
	// Name is the repository's name in that registry.
	Name string
}

func (r Repo) String() string {
	if r.Registry == "" {
		return r.Name
	}
	return r.Registry + "/" + r.Name
}

// Bounds on what a link record may hold, so that each costs a bounded
// amount of index space: registry hosts are at most 253 bytes (DNS) plus
// a port, and OCI repository names are well under 256 bytes in practice
// (ECR's limit is 256).
const (
	maxRegistryLen = 261
	maxRepoNameLen = 256
)

func (r Repo) validate() error {
	switch {
	case r.Name == "" || len(r.Name) > maxRepoNameLen:
		return fmt.Errorf("repository name of %d bytes (want 1 to %d)", len(r.Name), maxRepoNameLen)
	case len(r.Registry) > maxRegistryLen || strings.ContainsAny(r.Registry, "/\x00"):
		return fmt.Errorf("invalid registry %q", r.Registry)
	case strings.ContainsRune(r.Name, 0):
		return fmt.Errorf("invalid repository name %q", r.Name)
	}
	return nil
}

// linkKeyPrefix starts the Badger key of every link record:
// link/<digest>/<registry>/<name>, with an empty value. The digest comes
// first so that the links of one digest are one prefix; the registry
// holds no "/", so the name is everything after the second separator.
const linkKeyPrefix = "link/"

func linkKey(d digest.Digest, r Repo) []byte {
	return []byte(linkKeyPrefix + d.String() + "/" + r.Registry + "/" + r.Name)
}

// parseLinkKey splits a link key; ok is false when it is malformed.
func parseLinkKey(key string) (digest.Digest, Repo, bool) {
	rest, found := strings.CutPrefix(key, linkKeyPrefix)
	if !found {
		return "", Repo{}, false
	}
	ds, rest, found := strings.Cut(rest, "/")
	if !found || checkDigest(digest.Digest(ds)) != nil {
		return "", Repo{}, false
	}
	reg, name, found := strings.Cut(rest, "/")
	r := Repo{Registry: reg, Name: name}
	if !found || r.validate() != nil {
		return "", Repo{}, false
	}
	return digest.Digest(ds), r, true
}

// linkSet holds the links in memory, mirroring the link/ records. Reads
// (has) take mu shared; writes of records are ordered by wmu, held from
// the decision to write or delete a record until the write is durable,
// so that a link made again while its removal is pending is never
// deleted from disk after it was written.
type linkSet struct {
	wmu sync.Mutex
	mu  sync.RWMutex
	m   map[digest.Digest]map[Repo]struct{}
}

func newLinkSet() *linkSet {
	return &linkSet{m: make(map[digest.Digest]map[Repo]struct{})}
}

func (l *linkSet) has(r Repo, d digest.Digest) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	_, ok := l.m[d][r]
	return ok
}

// missing returns the digests of ds not linked to r.
func (l *linkSet) missing(r Repo, ds []digest.Digest) []digest.Digest {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []digest.Digest
	for _, d := range ds {
		if _, ok := l.m[d][r]; !ok {
			out = append(out, d)
		}
	}
	return out
}

func (l *linkSet) add(r Repo, ds ...digest.Digest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range ds {
		set := l.m[d]
		if set == nil {
			set = make(map[Repo]struct{}, 1)
			l.m[d] = set
		}
		set[r] = struct{}{}
	}
}

// forget drops every link of ds and returns their keys.
func (l *linkSet) forget(ds ...digest.Digest) [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var keys [][]byte
	for _, d := range ds {
		for r := range l.m[d] {
			keys = append(keys, linkKey(d, r))
		}
		delete(l.m, d)
	}
	return keys
}

// absent returns the keys of those link records that are not in memory
// (again): the ones a pending removal may still delete.
func (l *linkSet) absent(keys [][]byte) [][]byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := keys[:0]
	for _, k := range keys {
		d, r, ok := parseLinkKey(string(k))
		if _, linked := l.m[d][r]; !ok || !linked {
			out = append(out, k)
		}
	}
	return out
}

// count returns the number of links.
func (l *linkSet) count() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := 0
	for _, set := range l.m {
		n += len(set)
	}
	return n
}

// Link records that upstream holds dgst in repo, so that Linked(repo,
// dgst) holds from now on, across restarts. When dgst is a stored
// manifest or index, what it references is linked too, transitively
// through stored manifests (including references not stored yet): a
// registry keeps an image's content in its repository. The links are
// durable when Link returns. They are dropped with the content they
// point to (eviction, Delete, Purge), and at Open when they point to
// content neither stored nor referenced by a stored manifest.
func (s *Store) Link(repo Repo, dgst digest.Digest) error {
	_, err := s.LinkNew(repo, dgst)
	return err
}

// LinkNew links dgst to repo as Link does and returns the digests it
// linked that were not linked to repo before (dgst, and what it
// references): what a replica tells the others (a shared tier).
func (s *Store) LinkNew(repo Repo, dgst digest.Digest) ([]digest.Digest, error) {
	if err := checkDigest(dgst); err != nil {
		return nil, err
	}
	if err := repo.validate(); err != nil {
		return nil, fmt.Errorf("cache: link %s: %w", dgst, err)
	}
	s.mu.Lock()
	if err := s.changeErrLocked(); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: link %s to %s: %w", dgst, repo, err)
	}
	ds := []digest.Digest{dgst}
	if s.g.has(dgst) {
		members, missing := s.g.closure(dgst)
		ds = append(members, missing...)
	}
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()
	added, err := s.links.write(s.db, repo, ds)
	if err != nil {
		return nil, fmt.Errorf("cache: link %s to %s: %w", dgst, repo, err)
	}
	return added, nil
}

// write links ds to r, in memory and durably on disk, and returns those
// of ds that were not linked before.
func (l *linkSet) write(db *badger.DB, r Repo, ds []digest.Digest) ([]digest.Digest, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	todo := l.missing(r, ds)
	if len(todo) == 0 {
		return nil, nil
	}
	wb := db.NewWriteBatch()
	for _, d := range todo {
		if err := wb.Set(linkKey(d, r), nil); err != nil {
			wb.Cancel()
			return nil, err
		}
	}
	if err := wb.Flush(); err != nil {
		return nil, err
	}
	l.add(r, todo...)
	return todo, nil
}

// Linked reports whether upstream is known to hold dgst in repo (Link).
func (s *Store) Linked(repo Repo, dgst digest.Digest) bool {
	return s.links.has(repo, dgst)
}

// LinkCount returns the number of links recorded.
func (s *Store) LinkCount() int { return s.links.count() }

// forgetLinksLocked drops the links of entries being removed, and of
// what they referenced that is neither stored nor referenced by another
// stored manifest any more. The records are deleted in the background;
// a crash before that leaves them for the next Open to drop.
func (s *Store) forgetLinksLocked(ds []digest.Digest) {
	keys := s.links.forget(ds...)
	if len(keys) == 0 || s.closed {
		return
	}
	s.ops.Add(1)
	go func() {
		defer s.ops.Done()
		s.links.wmu.Lock()
		defer s.links.wmu.Unlock()
		if err := writeIndexKeys(s.db, nil, s.links.absent(keys)); err != nil {
			s.log.Warn("cache: delete link records", "count", len(keys), "error", err)
		}
	}()
}

// loadLinks reads every link/ record. Those of digests keep rejects,
// and malformed ones, are returned in drop.
func loadLinks(db *badger.DB, keep func(digest.Digest) bool) (links *linkSet, drop [][]byte, err error) {
	links = newLinkSet()
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(linkKeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().KeyCopy(nil)
			d, r, ok := parseLinkKey(string(key))
			if !ok || !keep(d) {
				drop = append(drop, key)
				continue
			}
			links.add(r, d)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cache: load links: %w", err)
	}
	return links, drop, nil
}

// linksMarkerKey says the links of this directory are complete: set once
// links derived from tag records (an older version kept none) are
// written.
var linksMarkerKey = []byte("meta/links")

// deriveLinks gives a store written by a version without links the
// links its tag records imply: each recorded tag's manifest, and what it
// references, linked to the tag's repository of the main upstream
// (Registry ""). Content pulled before only by digest is confirmed
// upstream at its first request instead. It runs once per directory.
func (s *Store) deriveLinks() (int, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(linksMarkerKey)
		return err
	})
	if err == nil {
		return 0, nil
	}
	if !errors.Is(err, badger.ErrKeyNotFound) {
		return 0, fmt.Errorf("cache: read %s: %w", linksMarkerKey, err)
	}
	tags, err := s.Tags()
	if err != nil {
		return 0, err
	}
	before := s.links.count()
	for _, t := range tags {
		repo := Repo{Registry: t.Registry, Name: t.Repo}
		if repo.validate() != nil {
			continue
		}
		if err := s.Link(repo, t.Digest); err != nil {
			return 0, err
		}
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(linksMarkerKey, []byte{1}) }); err != nil {
		return 0, fmt.Errorf("cache: write %s: %w", linksMarkerKey, err)
	}
	return s.links.count() - before, nil
}
