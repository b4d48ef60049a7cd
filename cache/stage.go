package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// ErrStageTooLarge is returned by Stage.Admit when the staged content
// cannot fit in MaxSize beside the pinned content and the stored content
// it needs; the error wrapping it gives the figures.
var ErrStageTooLarge = errors.New("cache: staged content does not fit in the budget")

// stageKeyPrefix starts the key of a stage's journal record, written
// while its content is being admitted (doc.go, "Stages").
const stageKeyPrefix = "stage/"

// Stage collects verified content to be admitted to the store together,
// all or nothing, even across a crash: an import's blobs and manifests.
// Content is written to a directory of its own under tmp/, where Open
// removes whatever a crash leaves, and is neither visible nor counted
// until Admit. A Stage is used by one goroutine; Discard releases it.
type Stage struct {
	s     *Store
	dir   string
	files map[digest.Digest]*entry // staged content, each in dir/<hex>
	order []digest.Digest          // staged digests, in the order added
	needs map[digest.Digest]bool   // stored content the staged content needs
	done  bool
}

// NewStage starts a stage in a new directory under tmp/.
func (s *Store) NewStage() (*Stage, error) {
	s.mu.Lock()
	err := s.changeErrLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("cache: new stage: %w", err)
	}
	dir, err := os.MkdirTemp(s.tmpDir, "stage-")
	if err != nil {
		return nil, fmt.Errorf("cache: new stage: %w", err)
	}
	return &Stage{s: s, dir: dir, files: make(map[digest.Digest]*entry), needs: make(map[digest.Digest]bool)}, nil
}

// Add stages the content of dgst read from r: exactly size bytes that
// must hash to dgst (ErrSizeMismatch, ErrDigestMismatch otherwise). The
// file is synced before Add returns, and read for its references if it
// may be a manifest. Adding a digest twice stages it once.
func (st *Stage) Add(dgst digest.Digest, size int64, mediaType string, r io.Reader) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	if size < 0 || len(mediaType) > maxMediaTypeLen {
		return fmt.Errorf("cache: stage %s: invalid size %d or media type of %d bytes", dgst, size, len(mediaType))
	}
	if st.done {
		return fmt.Errorf("cache: stage %s: the stage is already admitted or discarded", dgst)
	}
	if _, ok := st.files[dgst]; ok {
		return nil
	}
	if free, low := st.s.lowOnSpace(); low {
		return fmt.Errorf("cache: stage %s: disk full: %d bytes free, below the reserve of %d", dgst, free, st.s.minFree)
	}
	path := filepath.Join(st.dir, dgst.Encoded())
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return fmt.Errorf("cache: stage %s: %w", dgst, err)
	}
	e, err := stageFile(f, dgst, size, mediaType, r)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		removeFile(path)
		return fmt.Errorf("cache: stage %s: %w", dgst, err)
	}
	st.files[dgst] = e
	st.order = append(st.order, dgst)
	return nil
}

// stageFile writes r to f, verifies it, syncs f and classifies it.
func stageFile(f *os.File, dgst digest.Digest, size int64, mediaType string, r io.Reader) (*entry, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size+1))
	if err != nil {
		return nil, err
	}
	if n != size {
		return nil, fmt.Errorf("%d bytes, declared %d: %w", n, size, ErrSizeMismatch)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != dgst.Encoded() {
		return nil, fmt.Errorf("content hashes to sha256:%s: %w", got, ErrDigestMismatch)
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	e := &entry{size: size, mediaType: mediaType}
	if mayBeManifest(mediaType, size) {
		if e.kind, e.refs, err = classify(dgst, mediaType, size, f); err == nil {
			e.classified = true
		}
	}
	return e, nil
}

// Need says the staged content needs dgst, which is stored: Admit keeps
// it from being evicted to make room, and fails if it is gone.
func (st *Stage) Need(dgst digest.Digest) { st.needs[dgst] = true }

// Discard removes the stage's directory and what it holds. It is a no-op
// after Admit, and may be called more than once.
func (st *Stage) Discard() error {
	st.done = true
	if st.dir == "" {
		return nil
	}
	dir := st.dir
	st.dir = ""
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("cache: discard stage %s: %w", dir, err)
	}
	return nil
}

// Admit admits the staged content in one step and returns the digests
// it added (content stored meanwhile by another writer is not added
// again). Least recently used images are evicted to make room, never one
// that holds content the stage needs. Either everything staged is stored
// when Admit returns nil, or nothing: after an error, and after a crash
// at any point, at the latest once Open has run. The stage is done
// afterwards either way.
func (st *Stage) Admit() ([]digest.Digest, error) {
	if st.done {
		return nil, errors.New("cache: admit: the stage is already admitted or discarded")
	}
	defer st.Discard()
	a, err := st.reserve()
	if err != nil {
		return nil, err
	}
	if len(a.todo) == 0 {
		a.finish(nil)
		return nil, nil
	}
	err = a.install()
	a.finish(err)
	if err != nil {
		return nil, err
	}
	return a.todo, nil
}

// admission is one Admit after its reservation.
type admission struct {
	st      *Stage
	todo    []digest.Digest // staged content not stored yet, busy
	total   int64           // their bytes, reserved
	victims []digest.Digest // evicted for them, busy
	done    chan struct{}   // closed when todo and victims are no longer busy
}

// reserve waits until no staged or needed digest is busy, then, under
// the store's lock, picks what to add, evicts room for it and reserves
// its bytes; the added and evicted digests stay busy until finish.
func (st *Stage) reserve() (*admission, error) {
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.changeErrLocked(); err != nil {
		return nil, fmt.Errorf("cache: admit: %w", err)
	}
	watch := slices.Concat(st.order, keys(st.needs))
	if err := s.waitAllIdleLocked(watch); err != nil {
		return nil, fmt.Errorf("cache: admit: %w", err)
	}
	a := &admission{st: st, done: make(chan struct{})}
	for _, d := range st.order {
		if s.g.has(d) {
			st.needs[d] = true // stored meanwhile: kept like the rest
			continue
		}
		a.todo = append(a.todo, d)
		a.total += st.files[d].size
	}
	if err := st.checkNeedsLocked(); err != nil {
		return nil, err
	}
	if len(a.todo) == 0 {
		s.ops.Add(1)
		return a, nil
	}
	if room := s.maxSize - s.g.pinnedBytes; a.total > room {
		return nil, fmt.Errorf("cache: admit %d entries of %d bytes in all: %w: MaxSize %d less %d pinned bytes leaves %d",
			len(a.todo), a.total, ErrStageTooLarge, s.maxSize, s.g.pinnedBytes, room)
	}
	for _, d := range a.todo {
		s.busy[d] = a.done
	}
	s.ops.Add(1)
	victims, evictedBytes, fits := s.makeRoomLocked(a.total, a.done, st.victimLocked)
	a.victims = victims
	if !fits {
		return a.failLocked(fmt.Errorf("cache: admit %d entries of %d bytes in all: %w beside the %d stored bytes they need (MaxSize %d, %d bytes pinned)",
			len(a.todo), a.total, ErrStageTooLarge, st.neededBytesLocked(), s.maxSize, s.g.pinnedBytes))
	}
	// The wait above let other changes in: what the stage needs must
	// still be there.
	if err := st.checkNeedsLocked(); err != nil {
		return a.failLocked(err)
	}
	s.reserved += a.total
	for _, d := range a.todo {
		st.files[d].lastAccess = s.g.now()
	}
	s.syncSizeLocked()
	s.stats.evictions.Add(int64(len(a.victims)))
	s.stats.evictedBytes.Add(evictedBytes)
	return a, nil
}

// failLocked undoes a reservation that found no room: the victims
// already taken out are removed, and nothing stays busy.
func (a *admission) failLocked(err error) (*admission, error) {
	s := a.st.s
	victims := a.victims
	a.todo, a.total, a.victims = nil, 0, nil
	s.mu.Unlock()
	s.removeEvicted(victims)
	s.mu.Lock()
	s.releaseLocked(a.done, victims, a.st.order)
	s.ops.Done()
	return nil, err
}

// checkNeedsLocked fails when stored content the stage needs is gone.
func (st *Stage) checkNeedsLocked() error {
	var gone []digest.Digest
	for d := range st.needs {
		if !st.s.g.has(d) {
			gone = append(gone, d)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	slices.Sort(gone)
	return fmt.Errorf("cache: admit: %d stored entries the staged content needs were removed meanwhile: %s: %w",
		len(gone), describeMissing(gone), ErrIncomplete)
}

// neededBytesLocked is the bytes of the stored content the stage needs.
func (st *Stage) neededBytesLocked() int64 {
	return st.s.g.bytesOf(keys(st.needs))
}

// victimLocked returns the least recently used eviction unit that holds
// nothing the stage needs, or nil.
func (st *Stage) victimLocked() []digest.Digest {
	s := st.s
	for _, root := range s.g.candidates() {
		unit := s.g.unit(root)
		if !slices.ContainsFunc(unit, func(d digest.Digest) bool { return st.needs[d] }) {
			return unit
		}
	}
	return nil
}

// install makes the reserved content durable in the store, with a
// journal record that makes it all or nothing: written before the first
// file moves into blobs/, deleted once every index record is written.
// Open undoes whatever a journal record lists (reconcile.go). On error
// nothing of the stage remains, or its journal does.
func (a *admission) install() error {
	s, st := a.st.s, a.st
	for _, v := range a.victims {
		if err := removeFile(s.blobPath(v)); err != nil {
			// Left for reconcile at the next Open; it is no longer indexed.
			s.log.Warn("cache: remove evicted file", "digest", v, "error", err)
		}
	}
	s.idxMu.RLock()
	defer s.idxMu.RUnlock()
	if err := writeIndex(s.db, nil, a.victims); err != nil {
		s.log.Warn("cache: delete evicted index records", "error", err)
	}
	journal := []byte(stageKeyPrefix + filepath.Base(st.dir))
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(journal, encodeDigests(a.todo)) }); err != nil {
		return fmt.Errorf("cache: admit %d entries: write journal: %w", len(a.todo), err)
	}
	s.stageStep("journaled")
	err := a.moveIntoPlace()
	if err == nil {
		s.stageStep("moved")
		recs := make([]indexRecord, len(a.todo))
		for i, d := range a.todo {
			recs[i] = indexRecord{dgst: d, e: st.files[d], refs: st.files[d].classified}
		}
		if err = writeIndex(s.db, recs, nil); err != nil {
			err = fmt.Errorf("write index: %w", err)
		}
	}
	if err == nil {
		s.stageStep("indexed")
		// The commit point.
		err = s.db.Update(func(txn *badger.Txn) error { return txn.Delete(journal) })
		if err == nil {
			return nil
		}
		err = fmt.Errorf("delete journal: %w", err)
	}
	err = fmt.Errorf("cache: admit %d entries: %w", len(a.todo), err)
	if uerr := s.undoStage(journal, a.todo); uerr != nil {
		s.log.Warn("cache: undo a failed admission; the next Open finishes it", "journal", string(journal), "error", uerr)
	}
	return err
}

// moveIntoPlace renames the staged files into blobs/ and syncs the
// directories they moved into.
func (a *admission) moveIntoPlace() error {
	s, st := a.st.s, a.st
	dirs := map[string]bool{}
	for _, d := range a.todo {
		final := s.blobPath(d)
		if err := ensureDir(filepath.Dir(final)); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(st.dir, d.Encoded()), final); err != nil {
			return err
		}
		dirs[filepath.Dir(final)] = true
	}
	for dir := range dirs {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

// finish ends an admission: the installed content joins the store (or,
// after err, its reserved bytes are given back), and nothing stays busy.
func (a *admission) finish(err error) {
	s, st := a.st.s, a.st
	s.mu.Lock()
	s.reserved -= a.total
	if err == nil {
		for _, d := range a.todo {
			s.g.insert(d, st.files[d])
		}
		s.stats.commits.Add(int64(len(a.todo)))
	}
	s.syncSizeLocked()
	s.releaseLocked(a.done, a.victims, a.todo)
	s.mu.Unlock()
	s.ops.Done()
}

// releaseLocked ends the busy marks of done's digests and wakes waiters.
func (s *Store) releaseLocked(done chan struct{}, lists ...[]digest.Digest) {
	for _, ds := range lists {
		for _, d := range ds {
			if s.busy[d] == done {
				delete(s.busy, d)
			}
		}
	}
	close(done)
	s.cond.Broadcast()
}

// waitAllIdleLocked waits, with s.mu held, until none of dgsts is busy.
func (s *Store) waitAllIdleLocked(dgsts []digest.Digest) error {
	for {
		i := slices.IndexFunc(dgsts, func(d digest.Digest) bool { _, busy := s.busy[d]; return busy })
		if i < 0 {
			return s.changeErrLocked()
		}
		if err := s.waitIdleLocked(dgsts[i]); err != nil {
			return err
		}
	}
}

// undoStage removes what an unfinished admission listed in its journal
// record put in place (files and index records), then the record.
func (s *Store) undoStage(journal []byte, dgsts []digest.Digest) error {
	var errs []error
	for _, d := range dgsts {
		if err := removeFile(s.blobPath(d)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return writeIndexKeys(s.db, nil, append(keysOf(dgsts), journal))
}

// stageStep calls the test hook, if any, at a step of an admission.
func (s *Store) stageStep(step string) {
	if s.stageHook != nil {
		s.stageHook(step)
	}
}

// encodeDigests packs sha256 digests as their 32 raw bytes each.
func encodeDigests(dgsts []digest.Digest) []byte {
	b := make([]byte, 0, 32*len(dgsts))
	for _, d := range dgsts {
		raw, _ := hex.DecodeString(d.Encoded()) // checked digests
		b = append(b, raw...)
	}
	return b
}

// decodeDigests unpacks encodeDigests.
func decodeDigests(b []byte) ([]digest.Digest, error) {
	if len(b)%32 != 0 {
		return nil, fmt.Errorf("%d bytes is not a whole number of sha256 digests", len(b))
	}
	out := make([]digest.Digest, 0, len(b)/32)
	for i := 0; i < len(b); i += 32 {
		out = append(out, digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(b[i:i+32])))
	}
	return out, nil
}

// loadStages reads the journal records of admissions a crash cut short,
// by key.
func loadStages(db *badger.DB) (map[string][]digest.Digest, error) {
	out := make(map[string][]digest.Digest)
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 10, Prefix: []byte(stageKeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := string(it.Item().KeyCopy(nil))
			err := it.Item().Value(func(v []byte) error {
				ds, err := decodeDigests(v)
				out[key] = ds // nil for a record that does not parse: dropped
				return err
			})
			if err != nil {
				out[key] = nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache: reconcile: read %s records: %w", stageKeyPrefix, err)
	}
	return out, nil
}

func keys[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
