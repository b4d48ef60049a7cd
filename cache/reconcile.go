package cache

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/opencontainers/go-digest"
)

// reconcileReport counts what Open cleaned up.
type reconcileReport struct {
	tmpRemoved    int // anything in tmp/
	stagesUndone  int // admissions a crash cut short (stage.go)
	badRecords    int // index keys or values that do not parse
	missingFiles  int // index entries without a file
	sizeMismatch  int // index entries whose file has another size (file removed too)
	strayFiles    int // files or directories under blobs/sha256 with no index entry or a bad name
	evicted       int // entries evicted because the budget shrank
	evictedBytes  int64
	badRefs       int // ref/ records that do not parse, or whose entry is gone
	badPins       int // pin/ records that do not parse
	pins          int // pins kept
	pinnedBytes   int64
	classified    int // entries read for their references (stored by an older version)
	manifests     int // entries that reference something
	references    int // references of those
	kept          int
	keptBytes     int64
	otherBlobDirs int // unknown entries beside blobs/sha256, left alone
	links         int // link records kept
	droppedLinks  int // link records of content gone, or malformed
}

// reconcile makes the index and the files agree before anything is served,
// rebuilds the reference graph, loads the pins, builds the LRU of the
// unpinned roots ordered by persisted access time, and evicts unpinned
// images down to MaxSize. It runs in Open, before the store is shared, so
// its I/O under s.mu blocks nobody.
func (s *Store) reconcile() error {
	var rep reconcileReport
	var err error
	if rep.tmpRemoved, err = s.clearTmp(); err != nil {
		return err
	}

	undone, err := s.undoStages(&rep)
	if err != nil {
		return err
	}
	recs, bad, err := loadIndex(s.db)
	if err != nil {
		return err
	}
	refRecs, badRefs, err := loadRefs(s.db)
	if err != nil {
		return err
	}
	pins, badPins, err := loadPins(s.db)
	if err != nil {
		return err
	}
	rep.badRecords = len(bad)
	scan, err := s.scanIndex(recs, refRecs, undone, &rep)
	if err != nil {
		return err
	}
	live, classified := scan.live, scan.classified
	// ref/ records left over have no blob/ record (an older version
	// removed the entry): drop them with the records that do not parse.
	for d := range refRecs {
		badRefs = append(badRefs, refKey(d))
	}
	rep.badRefs, rep.classified, rep.badPins = len(badRefs), len(classified), len(badPins)
	if err := s.writeRecords(classified, slices.Concat(bad, badRefs, badPins, keysOf(scan.drop))); err != nil {
		return err
	}

	if rep.strayFiles, err = s.removeStrays(scan.indexed); err != nil {
		return err
	}
	if rep.otherBlobDirs, err = s.countOtherBlobDirs(); err != nil {
		return err
	}

	if err := s.loadGraph(live, pins, &rep); err != nil {
		return err
	}
	if err := s.evictToBudget(&rep); err != nil {
		return err
	}
	s.syncSizeLocked()
	s.stats.evictions.Add(int64(rep.evicted))
	s.stats.evictedBytes.Add(rep.evictedBytes)
	rep.kept, rep.keptBytes = int(s.g.entries), s.g.bytes
	rep.pins, rep.pinnedBytes = len(s.g.pins), s.g.pinnedBytes

	s.logOpened(rep)
	return nil
}

// loadGraph builds the image graph from the entries kept, ordered by
// access time, and the pins, then loads the links of what it stores or
// references, dropping the others.
func (s *Store) loadGraph(live []indexRecord, pins map[digest.Digest]*pinRecord, rep *reconcileReport) error {
	// Oldest first, so the most recently used entry ends at the LRU
	// front. Only roots and loose content go into the LRU; what a stored
	// manifest references goes with it (graph.go). Pins are known first,
	// so pinned roots stay out of it.
	slices.SortFunc(live, func(a, b indexRecord) int {
		return cmp.Or(cmp.Compare(a.e.lastAccess, b.e.lastAccess), cmp.Compare(a.dgst, b.dgst))
	})
	for _, r := range live {
		if len(r.e.refs) > 0 {
			rep.manifests++
			rep.references += len(r.e.refs)
		}
	}
	s.g.load(live, pins)
	// Links of content neither stored nor referenced by a stored
	// manifest are left from removals cut short, or from downloads that
	// failed: drop them.
	links, staleLinks, err := loadLinks(s.db, s.g.referenced)
	if err != nil {
		return err
	}
	if err := s.writeRecords(nil, staleLinks); err != nil {
		return err
	}
	s.links = links
	rep.links, rep.droppedLinks = links.count(), len(staleLinks)
	return nil
}

// indexScan is what reconcile keeps of the blob/ records it checked.
type indexScan struct {
	live       []indexRecord            // entries kept in view
	indexed    map[digest.Digest]*entry // the same, by digest
	drop       []digest.Digest          // entries whose records go: file missing or damaged
	classified []indexRecord            // entries read for their references now
}

// scanIndex checks the file of every blob/ record but those undone, and
// gives each entry it keeps its references: from its ref/ record, which
// it removes from refRecs, or by reading the entry.
func (s *Store) scanIndex(recs []indexRecord, refRecs map[digest.Digest]refRecord, undone map[digest.Digest]bool, rep *reconcileReport) (indexScan, error) {
	sc := indexScan{live: recs[:0], indexed: make(map[digest.Digest]*entry, len(recs))}
	for _, r := range recs {
		if undone[r.dgst] {
			continue // read-only: left in the index, out of view
		}
		rr, hasRefs := refRecs[r.dgst]
		delete(refRecs, r.dgst)
		damaged, err := s.checkFile(r, rep)
		if err != nil {
			return indexScan{}, err
		}
		if damaged && !s.readOnly {
			sc.drop = append(sc.drop, r.dgst)
			continue
		}
		// Read-only, a damaged entry stays in view, for Verify to
		// report; Get reports it missing.
		if hasRefs {
			r.e.kind, r.e.classified = rr.kind, true
			r.e.refs = slices.DeleteFunc(rr.refs, func(d digest.Digest) bool { return d == r.dgst })
		} else if !damaged && mayBeManifest(r.e.mediaType, r.e.size) {
			// Stored before references were recorded, or its read
			// failed at commit: classify it now, once.
			if err := s.classifyFile(r); err != nil {
				s.log.Warn("cache: cannot read entry for its references", "digest", r.dgst, "error", err)
			} else {
				sc.classified = append(sc.classified, indexRecord{dgst: r.dgst, e: r.e, refs: true})
			}
		}
		sc.indexed[r.dgst] = r.e
		sc.live = append(sc.live, r)
	}
	return sc, nil
}

// checkFile reports whether the file of an indexed entry is missing, or
// not a regular file of the indexed size; such a file is removed, unless
// the store is read-only.
func (s *Store) checkFile(r indexRecord, rep *reconcileReport) (damaged bool, err error) {
	path := s.blobPath(r.dgst)
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rep.missingFiles++
		return true, nil
	case err != nil:
		return false, fmt.Errorf("cache: reconcile: %w", err)
	case fi.Mode().IsRegular() && fi.Size() == r.e.size:
		return false, nil
	}
	rep.sizeMismatch++
	if s.readOnly {
		return true, nil
	}
	if err := os.RemoveAll(path); err != nil {
		return true, fmt.Errorf("cache: reconcile: remove damaged blob: %w", err)
	}
	return true, nil
}

// logOpened logs what reconcile found and did, and warns when the
// stored content exceeds the budget or blobs/ holds unknown entries.
func (s *Store) logOpened(rep reconcileReport) {
	s.log.Info("cache: opened",
		"dir", s.dir,
		"read_only", s.readOnly,
		"entries", rep.kept,
		"bytes", rep.keptBytes,
		"max_size", s.maxSize,
		"removed_temp_files", rep.tmpRemoved,
		"undone_admissions", rep.stagesUndone,
		"dropped_bad_records", rep.badRecords,
		"dropped_missing_files", rep.missingFiles,
		"dropped_size_mismatches", rep.sizeMismatch,
		"removed_stray_files", rep.strayFiles,
		"evicted", rep.evicted,
		"evicted_bytes", rep.evictedBytes,
		"manifests", rep.manifests,
		"references", rep.references,
		"classified", rep.classified,
		"dropped_bad_ref_records", rep.badRefs,
		"pins", rep.pins,
		"pinned_bytes", rep.pinnedBytes,
		"dropped_bad_pin_records", rep.badPins,
		"links", rep.links,
		"dropped_links", rep.droppedLinks,
	)
	if s.g.bytes > s.maxSize && s.readOnly {
		s.log.Warn("cache: stored content exceeds the budget; opened read-only, so nothing is evicted",
			"bytes", s.g.bytes, "max_size", s.maxSize)
	} else if s.g.bytes > s.maxSize {
		s.log.Warn("cache: pinned content exceeds the budget; everything else evicted, nothing new is stored until pins are removed or the budget raised",
			"pinned_bytes", s.g.pinnedBytes, "max_size", s.maxSize, "pins", len(s.g.pins))
	}
	if rep.otherBlobDirs > 0 {
		s.log.Warn("cache: unknown entries under blobs/ left alone", "dir", filepath.Dir(s.blobDir), "count", rep.otherBlobDirs)
	}
}

// clearTmp removes everything in tmp/, leftovers of downloads and imports
// a crash or a kill cut short, and returns how many entries it removed.
// Read-only, it only counts them.
func (s *Store) clearTmp() (int, error) {
	tmp, err := os.ReadDir(s.tmpDir)
	if s.readOnly && errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cache: reconcile: read %s: %w", s.tmpDir, err)
	}
	if s.readOnly {
		return len(tmp), nil
	}
	for _, de := range tmp {
		// RemoveAll never follows a symlink: a link in tmp/ is
		// removed, not what it points to.
		if err := os.RemoveAll(filepath.Join(s.tmpDir, de.Name())); err != nil {
			return 0, fmt.Errorf("cache: reconcile: remove stale temp file: %w", err)
		}
	}
	return len(tmp), nil
}

// undoStages undoes the admissions a crash cut short (Stage.Admit): it
// removes the files and index records their journals list, then the
// journals. It returns the digests it undid; read-only, it only returns
// them, for reconcile to leave out of view.
func (s *Store) undoStages(rep *reconcileReport) (map[digest.Digest]bool, error) {
	stages, err := loadStages(s.db)
	if err != nil {
		return nil, err
	}
	undone := make(map[digest.Digest]bool)
	for key, ds := range stages {
		for _, d := range ds {
			undone[d] = true
		}
		if s.readOnly {
			continue
		}
		if err := s.undoStage([]byte(key), ds); err != nil {
			return nil, fmt.Errorf("cache: reconcile: undo the unfinished admission %s: %w", key, err)
		}
	}
	rep.stagesUndone = len(stages)
	return undone, nil
}

// writeRecords sets and deletes index records for reconcile, in one
// batch; read-only, it writes nothing.
func (s *Store) writeRecords(set []indexRecord, del [][]byte) error {
	if s.readOnly {
		return nil
	}
	if err := writeIndexKeys(s.db, set, del); err != nil {
		return fmt.Errorf("cache: reconcile: set %d and drop %d index records: %w", len(set), len(del), err)
	}
	return nil
}

// evictToBudget evicts least recently used images until the stored
// content fits MaxSize, which may have been lowered between runs, and
// says so in a warning: how much went and why. Eviction stops when only
// pinned content is left, even above MaxSize: a pin is an operator's
// promise. Read-only, it evicts nothing.
func (s *Store) evictToBudget(rep *reconcileReport) error {
	if s.readOnly || s.g.bytes <= s.maxSize {
		return nil
	}
	before := s.g.bytes
	var victims []digest.Digest
	for s.g.bytes > s.maxSize {
		unit, n := s.evictOldestLocked()
		if len(unit) == 0 {
			break
		}
		victims = append(victims, unit...)
		rep.evictedBytes += n
		for _, v := range unit {
			if err := removeFile(s.blobPath(v)); err != nil {
				return fmt.Errorf("cache: reconcile: evict %s: %w", v, err)
			}
		}
	}
	rep.evicted = len(victims)
	if err := writeIndex(s.db, nil, victims); err != nil {
		return fmt.Errorf("cache: reconcile: drop %d evicted index records: %w", len(victims), err)
	}
	s.log.Warn("cache: the budget is smaller than the stored content; evicted the least recently used images down to it",
		"max_size", s.maxSize, "stored_bytes", before, "evicted_entries", rep.evicted, "evicted_bytes", rep.evictedBytes,
		"kept_bytes", s.g.bytes)
	return nil
}

// classifyFile reads the file of an indexed entry for its references.
func (s *Store) classifyFile(r indexRecord) error {
	f, err := os.Open(s.blobPath(r.dgst))
	if err != nil {
		return err
	}
	defer f.Close()
	r.e.kind, r.e.refs, err = classify(r.dgst, r.e.mediaType, r.e.size, f)
	r.e.classified = err == nil
	return err
}

// removeStrays removes everything under blobs/sha256 that is not the file
// of an indexed entry at its proper path: unindexed files (a crash between
// rename and index write), names that are not a sha256 hex, files in the
// wrong fan-out directory, directories and symlinks where files belong.
func (s *Store) removeStrays(indexed map[digest.Digest]*entry) (int, error) {
	removed := 0
	remove := func(path string) error {
		if s.readOnly {
			removed++ // counted, left alone
			return nil
		}
		// path is an entry of blobs/sha256 or of a fan-out directory
		// found by lstat: RemoveAll removes a link itself, never what
		// it points to.
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("cache: reconcile: remove stray %s: %w", path, err)
		}
		removed++
		return nil
	}
	fanout, err := os.ReadDir(s.blobDir)
	if s.readOnly && errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cache: reconcile: read %s: %w", s.blobDir, err)
	}
	for _, fd := range fanout {
		dir := filepath.Join(s.blobDir, fd.Name())
		if !fd.IsDir() || len(fd.Name()) != 2 || !isHex(fd.Name()) {
			if err := remove(dir); err != nil {
				return removed, err
			}
			continue
		}
		files, err := os.ReadDir(dir)
		if err != nil {
			return removed, fmt.Errorf("cache: reconcile: read %s: %w", dir, err)
		}
		for _, de := range files {
			name := de.Name()
			dgst := digest.NewDigestFromEncoded(digest.SHA256, name)
			_, ok := indexed[dgst]
			if ok && de.Type().IsRegular() && name[:2] == fd.Name() {
				continue
			}
			if err := remove(filepath.Join(dir, name)); err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
}

// countOtherBlobDirs counts entries under blobs/ other than sha256. They
// are not ours to delete (a future algorithm, an operator's file) and are
// never served, so they are only reported.
func (s *Store) countOtherBlobDirs() (int, error) {
	des, err := os.ReadDir(filepath.Dir(s.blobDir))
	if s.readOnly && errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cache: reconcile: %w", err)
	}
	n := 0
	for _, de := range des {
		if de.Name() != string(digest.SHA256) {
			n++
		}
	}
	return n, nil
}
