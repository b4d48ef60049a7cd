package cache

import (
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// Purge removes dgst and the content only it references, transitively:
// the unit eviction would take with it (content another stored manifest
// references stays, and so does pinned content). It returns what it
// removed, dgst first. It may run while the store serves: commits of
// the same digests wait for it, and readers that have a file open keep
// reading all of it (removal is an unlink).
//
// Purging content a stored manifest references leaves that manifest
// incomplete, as Delete does. Purge refuses pinned content, a pinned
// image or anything it references, with an error wrapping ErrPinned; it
// returns an error wrapping ErrNotFound if dgst is not stored.
func (s *Store) Purge(dgst digest.Digest) ([]Info, error) {
	if err := checkDigest(dgst); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if err := s.changeErrLocked(); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: purge %s: %w", dgst, err)
	}
	if err := s.waitIdleLocked(dgst); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: purge %s: %w", dgst, err)
	}
	if !s.g.has(dgst) {
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: purge %s: %w", dgst, ErrNotFound)
	}
	if s.g.isPinned(dgst) {
		roots := s.g.pinRootsOf(dgst)
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: purge %s: %w by %v", dgst, ErrPinned, roots)
	}
	infos := s.takeLocked(s.g.unit(dgst))
	return infos, s.removeTakenUnlock(infos)
}

// PurgeUnused removes every unpinned image and loose entry whose last
// access is before before, each as the unit eviction would take: the
// root and the content only it references. Content another stored image
// still references stays. It returns what it removed, oldest image
// first. PurgeUnused(time.Now().Add(time.Hour)) removes everything not
// pinned. Like Purge, it may run while the store serves.
func (s *Store) PurgeUnused(before time.Time) ([]Info, error) {
	s.mu.Lock()
	if err := s.changeErrLocked(); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: purge unused before %s: %w", before.Format(time.RFC3339), err)
	}
	// The candidates are the entries no stored manifest references,
	// least recently used first; none is pinned. Their order is not
	// strictly by access time (content that became loose joins at the
	// front), so every one is checked.
	var infos []Info
	for _, root := range s.g.candidates() {
		e, ok := s.g.lookup(root)
		if !ok || !timeFromNanos(e.lastAccess).Before(before) {
			continue
		}
		// One unit at a time: removing an image can leave content it
		// shared with a later candidate to that candidate alone.
		infos = append(infos, s.takeLocked(s.g.unit(root))...)
	}
	return infos, s.removeTakenUnlock(infos)
}

// takeLocked takes the entries of a unit out of the store (graph,
// eviction order, accounting) and returns their Info. A unit leaves
// nothing loose behind: what it referenced and kept has another stored
// parent.
func (s *Store) takeLocked(unit []digest.Digest) []Info {
	infos := make([]Info, len(unit))
	for i, d := range unit {
		e, _ := s.g.lookup(d)
		infos[i] = s.g.info(d, e)
	}
	s.dropLocked(unit...)
	return infos
}

// removeTakenUnlock unlinks the files and deletes the index records of
// entries taken out by takeLocked. It is called with s.mu held and
// releases it: the entries stay busy, so that no commit of the same
// digest races the removal, until their records are gone.
func (s *Store) removeTakenUnlock(taken []Info) error {
	if len(taken) == 0 {
		s.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	dgsts := make([]digest.Digest, len(taken))
	for i, info := range taken {
		dgsts[i] = info.Digest
		s.busy[info.Digest] = done
	}
	s.ops.Add(1)
	s.mu.Unlock()

	var errs []error
	for _, d := range dgsts {
		if err := removeFile(s.blobPath(d)); err != nil {
			// No longer indexed once the batch below lands; reconcile
			// removes the file at the next Open.
			errs = append(errs, fmt.Errorf("cache: purge %s: %w", d, err))
		}
	}
	s.idxMu.RLock()
	if err := writeIndex(s.db, nil, dgsts); err != nil {
		errs = append(errs, fmt.Errorf("cache: purge %d entries from the index: %w", len(dgsts), err))
	}
	s.idxMu.RUnlock()

	s.mu.Lock()
	for _, d := range dgsts {
		delete(s.busy, d)
	}
	close(done)
	s.mu.Unlock()
	s.ops.Done()
	s.stats.purged.Add(int64(len(dgsts)))
	return errors.Join(errs...)
}
