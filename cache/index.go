package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/opencontainers/go-digest"
)

// blobKeyPrefix starts the Badger key of every committed entry. The ref/
// prefix (refs.go) holds what manifests reference, pin/ (pins.go) the
// pins; tag/ (tags.go) is not touched here.
const blobKeyPrefix = "blob/"

const (
	recordVersion   = 1
	recordHeaderLen = 1 + 8 + 8
)

// entry is the in-memory state of one committed entry; it is only read
// or changed under Store.mu.
type entry struct {
	size       int64
	mediaType  string
	lastAccess int64 // unix nanoseconds
	// kind and refs say what the entry references (refs.go): nothing, or
	// for a manifest its config and layers, for an index its manifests.
	kind refKind
	refs []digest.Digest
	// classified says kind and refs are known and persisted as the
	// entry's ref/ record; entries that cannot be manifests have none.
	classified bool
}

// info returns what the entry itself knows; graph.info adds
// whether it is pinned.
func (e *entry) info(dgst digest.Digest) Info {
	kind := "blob"
	switch e.kind {
	case kindManifest:
		kind = "manifest"
	case kindIndex:
		kind = "index"
	}
	return Info{Digest: dgst, Size: e.size, MediaType: e.mediaType, LastAccess: timeFromNanos(e.lastAccess), Kind: kind}
}

func blobKey(dgst digest.Digest) []byte {
	return []byte(blobKeyPrefix + dgst.String())
}

// encodeRecord encodes e as a version 1 record (layout in doc.go).
func encodeRecord(e *entry) []byte {
	b := make([]byte, recordHeaderLen+len(e.mediaType))
	b[0] = recordVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(e.size))
	binary.BigEndian.PutUint64(b[9:17], uint64(e.lastAccess))
	copy(b[recordHeaderLen:], e.mediaType)
	return b
}

// decodeRecord parses a record written by encodeRecord.
func decodeRecord(b []byte) (*entry, error) {
	if len(b) < recordHeaderLen {
		return nil, fmt.Errorf("record of %d bytes is shorter than its %d-byte header", len(b), recordHeaderLen)
	}
	if b[0] != recordVersion {
		return nil, fmt.Errorf("record version %d is not supported (want %d)", b[0], recordVersion)
	}
	size := int64(binary.BigEndian.Uint64(b[1:9]))
	if size < 0 {
		return nil, fmt.Errorf("record has negative size %d", size)
	}
	return &entry{
		size:       size,
		lastAccess: int64(binary.BigEndian.Uint64(b[9:17])),
		mediaType:  string(b[recordHeaderLen:]),
	}, nil
}

// Index file sizes. Badger maps its memtable (WAL) and value log files
// at twice these sizes, sparse; allocateIndexFiles fills them in at Open
// and the store keeps indexReserve bytes free for the ones it creates
// later (doc.go, "Disk full"). Index records are a few hundred bytes, so
// a 1 MiB memtable holds thousands of them.
const (
	indexMemTableSize = 1 << 20
	indexVlogFileSize = 1 << 20 // Badger's minimum; values stay in the LSM tree
)

// openIndex opens the Badger database in dir with options sized for a small
// index: tiny memtables and value log files, no block cache, no compression,
// no global expvar metrics. Every write is synced, so an index entry is
// durable once Commit returns; the periodic access-time batches pay one sync
// each, which is negligible. Badger takes a non-blocking flock on dir, so a
// second Open of the same directory fails (after settle).
func openIndex(dir string, log *slog.Logger, settle time.Duration) (*badger.DB, error) {
	db, err := openLocked(settle, func() (*badger.DB, error) { return badger.Open(indexOptions(dir, log)) })
	if err != nil {
		return nil, fmt.Errorf("cache: open index %s (is another process using this cache directory?): %w", dir, err)
	}
	if err := allocateIndexFiles(dir); err != nil {
		// The reserve still protects it; only another process filling
		// the disk could now make a write into the index fault.
		log.Warn("cache: cannot allocate the index files; keep free space on the cache filesystem", "dir", dir, "error", err)
	}
	return db, nil
}

// openIndexReadOnly opens the index in dir for reading only, under a
// shared lock, changing none of its files. An index whose write-ahead
// log ends in a partial write (the last writer crashed) cannot be read
// that way; it is then opened for writing under the exclusive lock, and
// Badger's recovery trims that log as any writing open would, which
// changes no record. The caller writes nothing either way.
func openIndexReadOnly(dir string, log *slog.Logger) (*badger.DB, error) {
	db, err := badger.Open(indexOptions(dir, log).WithReadOnly(true))
	// Badger wraps that error as text (y.Wrapf outside its debug mode),
	// so errors.Is cannot see it.
	if err != nil && strings.Contains(err.Error(), badger.ErrTruncateNeeded.Error()) {
		log.Info("cache: the index was not closed cleanly; recovering its log to read it", "dir", dir)
		db, err = badger.Open(indexOptions(dir, log))
	}
	if err != nil {
		return nil, fmt.Errorf("cache: open index %s read-only (is a mirror using this cache directory?): %w", dir, err)
	}
	return db, nil
}

// indexOptions are the Badger options of the index in dir.
func indexOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log: log}).
		WithMetricsEnabled(false).
		WithSyncWrites(true).
		WithDetectConflicts(false).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithMemTableSize(indexMemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(1 << 20).
		WithBaseLevelSize(4 << 20).
		WithValueThreshold(64 << 10).
		WithValueLogFileSize(indexVlogFileSize).
		WithNumCompactors(2).
		WithNumGoroutines(2)
}

// allocateIndexFiles allocates every block of the files Badger maps for
// writing (memtables, value log, discard stats), which it creates sparse:
// a store into a hole of a mapped file on a full disk kills the process
// with SIGBUS, while a failed fallocate is just an error.
func allocateIndexFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog") || name == "DISCARD") {
			continue
		}
		if err := allocateFile(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func allocateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, fi.Size()); err != nil {
		return fmt.Errorf("fallocate %s (%d bytes): %w", path, fi.Size(), err)
	}
	return nil
}

// indexRecord is one index entry to write, or as found at Open.
type indexRecord struct {
	dgst digest.Digest
	e    *entry
	refs bool // write e's ref/ record too (written once, at commit)
}

// loadIndex reads every blob/ record. Keys that do not name a valid sha256
// digest and values that do not decode are returned in bad so that the
// caller can delete them.
func loadIndex(db *badger.DB) (recs []indexRecord, bad [][]byte, err error) {
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(blobKeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := item.KeyCopy(nil)
			dgst := digest.Digest(strings.TrimPrefix(string(key), blobKeyPrefix))
			if checkDigest(dgst) != nil {
				bad = append(bad, key)
				continue
			}
			val, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("read value of %q: %w", key, err)
			}
			e, err := decodeRecord(val)
			if err != nil {
				bad = append(bad, key)
				continue
			}
			recs = append(recs, indexRecord{dgst: dgst, e: e})
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cache: load index: %w", err)
	}
	return recs, bad, nil
}

// writeIndex sets blob records (and the ref/ records of those marked so)
// and deletes the blob/ and ref/ records of del, in one batch, and returns
// once the batch is durable.
func writeIndex(db *badger.DB, set []indexRecord, del []digest.Digest) error {
	return writeIndexKeys(db, set, keysOf(del))
}

// keysOf returns the keys of the blob/ and ref/ records of dgsts. A
// ref/ key that does not exist costs only a tombstone; deleting it
// always also clears a record an older version left behind.
func keysOf(dgsts []digest.Digest) [][]byte {
	keys := make([][]byte, 0, 2*len(dgsts))
	for _, d := range dgsts {
		keys = append(keys, blobKey(d), refKey(d))
	}
	return keys
}

func writeIndexKeys(db *badger.DB, set []indexRecord, del [][]byte) error {
	if len(set) == 0 && len(del) == 0 {
		return nil
	}
	wb := db.NewWriteBatch()
	for _, k := range del {
		if err := wb.Delete(k); err != nil {
			wb.Cancel()
			return fmt.Errorf("delete %q: %w", k, err)
		}
	}
	for _, r := range set {
		if err := wb.Set(blobKey(r.dgst), encodeRecord(r.e)); err != nil {
			wb.Cancel()
			return fmt.Errorf("set %q: %w", blobKey(r.dgst), err)
		}
		if !r.refs {
			continue
		}
		if err := wb.Set(refKey(r.dgst), encodeRefs(r.e.kind, r.e.refs)); err != nil {
			wb.Cancel()
			return fmt.Errorf("set %q: %w", refKey(r.dgst), err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("flush batch: %w", err)
	}
	return nil
}

// refRecord is one decoded ref/ record as found at Open.
type refRecord struct {
	kind refKind
	refs []digest.Digest
}

// loadRefs reads every ref/ record. Keys that do not name a valid sha256
// digest and values that do not decode are returned in bad.
func loadRefs(db *badger.DB) (recs map[digest.Digest]refRecord, bad [][]byte, err error) {
	recs = make(map[digest.Digest]refRecord)
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(refKeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := item.KeyCopy(nil)
			dgst := digest.Digest(strings.TrimPrefix(string(key), refKeyPrefix))
			if checkDigest(dgst) != nil {
				bad = append(bad, key)
				continue
			}
			err := item.Value(func(val []byte) error {
				kind, refs, err := decodeRefs(val)
				if err != nil {
					bad = append(bad, key)
					return nil
				}
				recs[dgst] = refRecord{kind: kind, refs: refs}
				return nil
			})
			if err != nil {
				return fmt.Errorf("read value of %q: %w", key, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cache: load references: %w", err)
	}
	return recs, bad, nil
}

// badgerLogger routes Badger's errors and warnings to slog and drops its
// chatty info and debug output.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(format string, args ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (l badgerLogger) Warningf(format string, args ...any) {
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

// lockSettle is how long openLocked waits out a directory lock held by
// no mirror: Badger releases its flock by closing the directory's
// descriptor, and a child process forked at that moment (by this process,
// for anything) holds a copy until its exec closes it. A mirror that
// really holds the directory still fails the open, lockSettle later.
const lockSettle = 2 * time.Second

// openLocked runs open, again while it fails on Badger's directory lock,
// for at most settle.
func openLocked(settle time.Duration, open func() (*badger.DB, error)) (*badger.DB, error) {
	deadline := time.Now().Add(settle)
	for tries := 1; ; tries++ {
		db, err := open()
		if err == nil || !isDirLocked(err) || tries > 1 && time.Now().After(deadline) {
			return db, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isDirLocked reports whether err is Badger's refusal to open a directory
// another descriptor holds locked.
func isDirLocked(err error) bool {
	return errors.Is(err, syscall.EWOULDBLOCK) || strings.Contains(err.Error(), "Cannot acquire directory lock")
}
