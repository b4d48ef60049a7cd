package cache

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

var (
	// ErrNotFound is returned by Stat, Get, Delete and Purge for a digest
	// that is not stored, by Unpin for one that is not pinned and by
	// GetTag for a tag without a record. Check it with errors.Is.
	ErrNotFound = errors.New("cache: entry not found")
	// ErrDigestMismatch is returned by Commit when the written bytes hash to
	// another digest than the declared one; the error wrapping it names both.
	ErrDigestMismatch = errors.New("cache: digest mismatch")
	// ErrSizeMismatch is returned by Write and Commit when more or fewer bytes
	// arrive than the declared size; the error wrapping it names both.
	ErrSizeMismatch = errors.New("cache: size mismatch")
	// ErrAborted is what followers of a Writer receive after Abort(nil).
	ErrAborted = errors.New("cache: entry aborted")
	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("cache: store closed")
	// ErrWriterDone is returned by Writer.NewReader, Write and Commit once
	// the writer has been committed; the content is then available through
	// Store.Get if it was kept.
	ErrWriterDone = errors.New("cache: writer already committed")
	// ErrIncomplete is returned by Pin when the image or something it
	// references, transitively, is not stored; the error wrapping it
	// names the missing digests.
	ErrIncomplete = errors.New("cache: image incomplete")
	// ErrPinTooLarge is returned by Pin when all pinned content together
	// would exceed MaxSize; the error wrapping it gives the figures.
	ErrPinTooLarge = errors.New("cache: pinned content would exceed the budget")
	// ErrPinned is returned by Purge for pinned content: a pinned image or
	// anything it references.
	ErrPinned = errors.New("cache: entry is pinned")
	// ErrReadOnly is returned by every operation that would change a
	// store opened with Options.ReadOnly.
	ErrReadOnly = errors.New("cache: store opened read-only")
)

const (
	defaultAccessFlushInterval = 5 * time.Second
	// maxMediaTypeLen bounds the media type stored with an entry; real media
	// types are well under 128 bytes (RFC 6838).
	maxMediaTypeLen = 1024
)

// Info describes one stored entry.
type Info struct {
	Digest     digest.Digest
	Size       int64
	MediaType  string
	LastAccess time.Time
	// Kind is "index" (an OCI index or Docker manifest list), "manifest"
	// (an image manifest) or "blob" (anything else, including content
	// that could not be read for its references).
	Kind string
	// Pinned says the entry is a pinned image or content a pinned image
	// references, transitively: it is never evicted (Store.Pin).
	Pinned bool
}

// Options configure a Store.
type Options struct {
	// Dir is the root directory of the store; it is created if absent.
	Dir string
	// MaxSize is the byte budget for committed entries; it must be > 0.
	MaxSize int64
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
	// AccessFlushInterval is how often access times are persisted; 0 means 5s.
	AccessFlushInterval time.Duration
	// ReadOnly opens an existing store to look at it, never to change it:
	// Open evicts nothing (whatever MaxSize says), removes and moves no
	// file, fixes no mode and writes no index record. Leftovers it would
	// clean up are left out of view, except damaged entries (file missing
	// or of another size): those stay listed, for Verify to report, and
	// Get reports them missing. Operations that change the store fail
	// with ErrReadOnly. Several read-only stores may share a directory; a
	// writing one may not open it meanwhile.
	ReadOnly bool

	// lockSettle is how long Open waits out a directory lock that may
	// be passing; 0: lockSettle (tests that open a held directory on
	// purpose shorten it).
	lockSettle time.Duration
}

// Stats is a snapshot of a Store's counters. Entries, Bytes and
// PinnedBytes are current values; the others count events since Open.
type Stats struct {
	Entries          int64 // committed entries
	Bytes            int64 // committed bytes, including commits being installed
	PinnedBytes      int64 // bytes of pinned content, part of Bytes
	Hits             int64 // Get calls that returned an entry
	Misses           int64 // Get calls that returned ErrNotFound
	Commits          int64 // entries admitted by Commit
	Evictions        int64 // entries evicted to stay within MaxSize
	EvictedBytes     int64 // bytes of those entries
	Deletes          int64 // entries removed by Delete
	Purged           int64 // entries removed by Purge and PurgeUnused
	Discarded        int64 // verified entries not kept: larger than MaxSize, or than what pins leave of it
	DigestMismatches int64 // commits rejected for a wrong digest
	SizeMismatches   int64 // writers failed for a wrong size
	Aborts           int64 // writers aborted
	DiskFull         int64 // downloads not stored because the disk was full
}

// counters backs Stats; the fields are updated atomically so Stats and Size
// never take the store mutex.
type counters struct {
	entries, bytes, hits, misses, commits, evictions, evictedBytes atomic.Int64
	deletes, discarded, digestMismatches, sizeMismatches, aborts   atomic.Int64
	diskFull, pinnedBytes, purged                                  atomic.Int64
}

// Store is a digest-verified content store on disk. All methods are safe for
// concurrent use. See the package documentation for the layout.
type Store struct {
	dir, blobDir, tmpDir string
	maxSize              int64
	readOnly             bool // Options.ReadOnly
	log                  *slog.Logger
	db                   *badger.DB

	// idxMu orders index writes that could otherwise land out of order: an
	// access-time flush holds it exclusively from its snapshot to its write,
	// and every write that removes records holds it shared. A removal thus
	// either precedes the snapshot (and is not in it) or follows the flush,
	// so a flush never resurrects a deleted record.
	idxMu sync.RWMutex
	// tags keeps the tag records (tags.go); set once db is open.
	tags *tagStore
	// referrers keeps the referrers records (referrers.go); set with tags.
	referrers *referrersStore

	mu   sync.Mutex
	cond *sync.Cond // on mu; signalled when a reservation ends
	// g is the image graph: the stored entries, what references what,
	// the eviction order, the pins and their content (graph.go).
	g *graph
	// links says which repositories hold which content (links.go).
	links *linkSet
	// reserved is the bytes of commits being installed: counted against
	// maxSize (sizeLocked), not yet in g.
	reserved int64
	// busy holds digests with a disk change in flight (commit, eviction,
	// delete). Such a digest is never in g; whoever wants to change
	// it waits for the channel to close.
	busy   map[digest.Digest]chan struct{}
	closed bool
	ops    sync.WaitGroup // in-flight operations that will write the index

	stop      chan struct{}
	flushDone chan struct{}
	stats     counters

	// minFree is the free space (bytes) that temp files never take, so
	// that the index always finds room (doc.go, "Disk full"); 0 turns
	// the check off. freeSpace reports the free space of dir.
	minFree   int64
	freeSpace func() (int64, error)
	// tempWriteAt, if set, replaces the temp file's WriteAt (tests).
	tempWriteAt func(f *os.File, p []byte, off int64) (int, error)
	// stageHook, if set, is called at each step of Stage.Admit (tests).
	stageHook func(step string)
	// ringSize is how many bytes a relaying writer keeps in memory:
	// relayWindow (tests make it smaller, so as to relay less).
	ringSize int
}

// Open opens or creates the store in opts.Dir: it creates the directories,
// opens the index (failing at once if another Store holds it), reconciles
// the index with the files on disk and loads the LRU order.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("cache: open: Options.Dir is empty")
	}
	if opts.MaxSize <= 0 {
		return nil, fmt.Errorf("cache: open %s: Options.MaxSize must be > 0, got %d", opts.Dir, opts.MaxSize)
	}
	if opts.AccessFlushInterval < 0 {
		return nil, fmt.Errorf("cache: open %s: Options.AccessFlushInterval must be >= 0, got %v", opts.Dir, opts.AccessFlushInterval)
	}
	flushEvery := opts.AccessFlushInterval
	if flushEvery == 0 {
		flushEvery = defaultAccessFlushInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("cache: open %s: %w", opts.Dir, err)
	}
	s := &Store{
		dir:       dir,
		blobDir:   filepath.Join(dir, blobsDirName, string(digest.SHA256)),
		tmpDir:    filepath.Join(dir, tmpDirName),
		maxSize:   opts.MaxSize,
		readOnly:  opts.ReadOnly,
		log:       log,
		g:         newGraph(),
		busy:      make(map[digest.Digest]chan struct{}),
		links:     newLinkSet(),
		stop:      make(chan struct{}),
		flushDone: make(chan struct{}),
		minFree:   indexReserve,
		ringSize:  relayWindow,
	}
	s.freeSpace = func() (int64, error) { return statfsFree(s.dir) }
	s.cond = sync.NewCond(&s.mu)
	// A link in place of one of the store's directories would make it
	// create, and reconcile delete, files outside dir.
	if err := checkStoreDirs(dir); err != nil {
		return nil, err
	}
	if s.readOnly {
		if err := s.openReadOnly(); err != nil {
			return nil, err
		}
		close(s.flushDone) // nothing to flush
		return s, nil
	}
	for _, d := range []string{s.blobDir, s.tmpDir, filepath.Join(dir, indexDirName)} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return nil, fmt.Errorf("cache: open %s: %w", dir, err)
		}
	}
	// The index holds the directory lock, so open it before touching tmp/:
	// a second process must fail here, not delete the first one's downloads.
	if s.db, err = openIndex(filepath.Join(dir, indexDirName), log, cmp.Or(opts.lockSettle, lockSettle)); err != nil {
		return nil, err
	}
	s.tags = &tagStore{db: s.db, log: log}
	s.referrers = &referrersStore{db: s.db, log: log}
	// Owner-only, whatever an older version or Badger (0666 less the
	// umask) left (perm.go); under the lock, so no other store races it.
	if err := fixModes(dir, storeDirs(), log); err != nil {
		return nil, errors.Join(err, s.db.Close())
	}
	if err := s.reconcile(); err != nil {
		return nil, errors.Join(err, s.db.Close())
	}
	if n, err := s.deriveLinks(); err != nil {
		s.ops.Wait()
		return nil, errors.Join(err, s.db.Close())
	} else if n > 0 {
		log.Info("cache: linked content to the repositories of its tag records (first start with links)", "links", n)
	}
	go s.flushLoop(flushEvery)
	return s, nil
}

// Close stops the background flusher, persists pending access times and
// closes the index. Writers still open can no longer commit; their temp
// files are removed at the next Open. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.flushDone
	s.ops.Wait()
	if s.readOnly {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("cache: close index %s: %w", s.dir, err)
		}
		return nil
	}
	var errs []error
	if err := s.flushAccess(); err != nil {
		errs = append(errs, err)
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("cache: close index %s: %w", s.dir, err))
	}
	// Badger's files written since Open (tables, value logs).
	if err := fixModes(s.dir, []string{indexDirName}, s.log); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Stat returns the Info of a stored entry without changing its recency.
func (s *Store) Stat(dgst digest.Digest) (Info, error) {
	if err := checkDigest(dgst); err != nil {
		return Info{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Info{}, fmt.Errorf("cache: stat %s: %w", dgst, ErrClosed)
	}
	e, ok := s.g.lookup(dgst)
	if !ok {
		return Info{}, fmt.Errorf("cache: stat %s: %w", dgst, ErrNotFound)
	}
	return s.g.info(dgst, e), nil
}

// Get opens a stored entry for reading and marks it recently used; when
// the entry belongs to exactly one cached image (a layer, a config, a
// child manifest), that image is marked used too. The caller closes the
// file. The file stays readable even if the entry is evicted meanwhile.
// An entry whose file has vanished or changed size is dropped and
// reported as ErrNotFound.
func (s *Store) Get(dgst digest.Digest) (*os.File, Info, error) {
	if err := checkDigest(dgst); err != nil {
		return nil, Info{}, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, Info{}, fmt.Errorf("cache: get %s: %w", dgst, ErrClosed)
	}
	e, ok := s.g.lookup(dgst)
	if !ok {
		s.mu.Unlock()
		s.stats.misses.Add(1)
		return nil, Info{}, fmt.Errorf("cache: get %s: %w", dgst, ErrNotFound)
	}
	// Opening under the mutex is one syscall, and it means the file cannot
	// be evicted between the lookup and the open: an entry in the LRU always
	// has its file unless something outside the store removed it.
	path := s.blobPath(dgst)
	f, err := os.Open(path)
	var problem string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		problem = "file vanished"
	case err != nil:
		s.mu.Unlock()
		return nil, Info{}, fmt.Errorf("cache: get %s: %w", dgst, err)
	default:
		if fi, serr := f.Stat(); serr != nil || !fi.Mode().IsRegular() || fi.Size() != e.size {
			f.Close()
			problem = "file changed size"
		}
	}
	if problem != "" && s.readOnly {
		s.mu.Unlock()
		s.stats.misses.Add(1)
		return nil, Info{}, fmt.Errorf("cache: get %s: %s: %w", dgst, problem, ErrNotFound)
	}
	if problem != "" {
		s.dropLocked(dgst)
		done := s.markBusyLocked(dgst)
		s.mu.Unlock()
		rerr := s.removeEntry(dgst)
		s.endBusy(done, dgst)
		s.stats.misses.Add(1)
		s.log.Warn("cache: dropped damaged entry", "digest", dgst, "path", path, "problem", problem, "cleanup_error", rerr)
		return nil, Info{}, fmt.Errorf("cache: get %s: %s: %w", dgst, problem, ErrNotFound)
	}
	s.g.touch(dgst, e)
	info := s.g.info(dgst, e)
	s.mu.Unlock()
	s.stats.hits.Add(1)
	return f, info, nil
}

// Create starts a new entry of the given digest. size is the declared size
// in bytes, or -1 if unknown. The caller must finish the Writer with Commit
// or Abort. Only sha256 digests are supported.
func (s *Store) Create(dgst digest.Digest, size int64, mediaType string) (*Writer, error) {
	if err := checkDigest(dgst); err != nil {
		return nil, err
	}
	if size < -1 {
		return nil, fmt.Errorf("cache: create %s: invalid size %d (want >= 0, or -1 for unknown)", dgst, size)
	}
	if len(mediaType) > maxMediaTypeLen {
		return nil, fmt.Errorf("cache: create %s: media type of %d bytes exceeds %d", dgst, len(mediaType), maxMediaTypeLen)
	}
	s.mu.Lock()
	err := s.changeErrLocked()
	if err == nil {
		// Fetching content of a cached image is using that image.
		s.g.touchRoot(dgst)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("cache: create %s: %w", dgst, err)
	}
	w := &Writer{
		s:         s,
		dgst:      dgst,
		size:      size,
		mediaType: mediaType,
		h:         sha256.New(),
		refs:      2, // the writer and its hasher
		nextCheck: diskCheckEvery,
	}
	w.cond.L = &w.mu
	// On a full disk the download is relayed from memory, without a
	// temp file at all.
	free, full := s.lowOnSpace()
	why := fmt.Sprintf("%d bytes free, below the reserve of %d", free, s.minFree)
	if !full {
		f, err := os.CreateTemp(s.tmpDir, dgst.Encoded()[:12]+"-*")
		switch {
		case err == nil:
			w.f, w.tmpPath, w.procPath = f, f.Name(), "/proc/self/fd/"+strconv.Itoa(int(f.Fd()))
			w.writeAt = f.WriteAt
			if s.tempWriteAt != nil {
				w.writeAt = func(p []byte, off int64) (int, error) { return s.tempWriteAt(f, p, off) }
			}
		case isDiskFull(err):
			full, why = true, err.Error()
		default:
			return nil, fmt.Errorf("cache: create %s: temp file: %w", dgst, err)
		}
	}
	if full {
		w.startRelay(why)
	}
	go w.hashLoop()
	return w, nil
}

// Free space: temp files stop indexReserve bytes short of a full disk.
const (
	// indexReserve is what the index may still need to allocate: its
	// memtable files are 2*indexMemTableSize bytes, mapped sparse, and a
	// write into an unallocated page of a full disk is a SIGBUS. Four of
	// them cover the active and immutable memtables plus their flush.
	indexReserve = 4 * 2 * indexMemTableSize
	// diskCheckEvery is how many bytes a Writer writes between checks.
	diskCheckEvery = 1 << 20
)

// lowOnSpace reports whether the filesystem's free space is below the
// reserve, and how much it is. A failed check says there is room: the
// write itself will tell.
func (s *Store) lowOnSpace() (free int64, low bool) {
	if s.minFree <= 0 {
		return 0, false
	}
	free, err := s.freeSpace()
	if err != nil {
		return 0, false
	}
	return free, free < s.minFree
}

// statfsFree returns the bytes available to us on dir's filesystem.
func statfsFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// Put stores small content such as a manifest in one step: Create, Write,
// Commit. Content larger than MaxSize (or than the room pinned content
// leaves of it) is verified but not kept, and Put returns nil for it.
func (s *Store) Put(dgst digest.Digest, mediaType string, data []byte) error {
	w, err := s.Create(dgst, int64(len(data)), mediaType)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort(err)
		return err
	}
	_, err = w.Commit()
	return err
}

// Delete removes a stored entry: its index records and its file. Readers
// that have the file open keep reading it. Deleting a manifest leaves the
// content it referenced; what nothing else references becomes loose
// (plain LRU). Deleting content a stored manifest references leaves that
// manifest incomplete: Delete is explicit, unlike eviction. It removes
// pinned content too (a repair removes what is corrupt); the pin stays,
// and content fetched again under it is pinned as it lands.
func (s *Store) Delete(dgst digest.Digest) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	s.mu.Lock()
	if err := s.changeErrLocked(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("cache: delete %s: %w", dgst, err)
	}
	if err := s.waitIdleLocked(dgst); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("cache: delete %s: %w", dgst, err)
	}
	if !s.g.has(dgst) {
		s.mu.Unlock()
		return fmt.Errorf("cache: delete %s: %w", dgst, ErrNotFound)
	}
	s.dropLocked(dgst)
	done := s.markBusyLocked(dgst)
	s.mu.Unlock()
	err := s.removeEntry(dgst)
	s.endBusy(done, dgst)
	s.stats.deletes.Add(1)
	return err
}

// Size returns the committed bytes now, counting commits being installed.
// It never exceeds MaxSize, unless pinned content alone does (MaxSize was
// lowered below it between runs; see Pin).
func (s *Store) Size() int64 { return s.stats.bytes.Load() }

// MaxSize returns the byte budget.
func (s *Store) MaxSize() int64 { return s.maxSize }

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	c := &s.stats
	return Stats{
		Entries:          c.entries.Load(),
		Bytes:            c.bytes.Load(),
		PinnedBytes:      c.pinnedBytes.Load(),
		Hits:             c.hits.Load(),
		Misses:           c.misses.Load(),
		Commits:          c.commits.Load(),
		Evictions:        c.evictions.Load(),
		EvictedBytes:     c.evictedBytes.Load(),
		Deletes:          c.deletes.Load(),
		Purged:           c.purged.Load(),
		Discarded:        c.discarded.Load(),
		DigestMismatches: c.digestMismatches.Load(),
		SizeMismatches:   c.sizeMismatches.Load(),
		Aborts:           c.aborts.Load(),
		DiskFull:         c.diskFull.Load(),
	}
}

// admit stores a verified temp file as dgst. It evicts least recently used
// images to make room, reserving the bytes so that concurrent commits
// cannot overshoot MaxSize together, and installs the file without holding
// s.mu. f is the temp file's open descriptor, fsynced here only if the
// entry is going to be kept. A manifest is parsed for its references
// first, before s.mu is taken.
func (s *Store) admit(dgst digest.Digest, size int64, mediaType string, f *os.File, tmpPath string) (kept bool, err error) {
	e := s.newEntry(dgst, size, mediaType, f)
	s.mu.Lock()
	if err := s.waitIdleLocked(dgst); err != nil {
		s.mu.Unlock()
		return false, fmt.Errorf("cache: commit %s: %w", dgst, err)
	}
	if s.g.has(dgst) {
		// A concurrent download (or push) of the same content finished
		// first. Its media type may say less than this one's.
		s.mu.Unlock()
		s.dropTemp(tmpPath)
		if _, err := s.SetMediaType(dgst, mediaType); err != nil && !errors.Is(err, ErrNotFound) {
			s.log.Warn("cache: record media type", "digest", dgst, "media_type", mediaType, "error", err)
		}
		return true, nil
	}
	// Pinned content is never evicted: what it leaves of the budget is
	// all a new entry can have. Decided before anything is evicted.
	if room := s.maxSize - s.g.pinnedBytes; size > room {
		s.mu.Unlock()
		s.discard(dgst, size, room, tmpPath)
		return false, nil
	}
	// dgst and its victims share one busy channel, closed when done.
	done := s.markBusyLocked(dgst)
	victims, evictedBytes, keep := s.makeRoomLocked(size, done, s.g.oldestUnit)
	room := s.maxSize - s.g.pinnedBytes
	if keep {
		s.reserved += size
		s.syncSizeLocked()
		e.lastAccess = s.g.now()
	}
	s.mu.Unlock()

	if keep {
		err = s.install(dgst, e, f, tmpPath, victims)
	} else {
		s.removeEvicted(victims)
		s.discard(dgst, size, room, tmpPath)
	}

	s.mu.Lock()
	if keep {
		s.reserved -= size
		if err == nil {
			// Links dgst to what it references and to the stored
			// manifests that reference it, whichever landed first.
			s.g.insert(dgst, e)
		}
		s.syncSizeLocked()
	}
	delete(s.busy, dgst)
	for _, v := range victims {
		delete(s.busy, v)
	}
	close(done)
	s.cond.Broadcast()
	s.mu.Unlock()
	s.ops.Done()

	s.stats.evictions.Add(int64(len(victims)))
	s.stats.evictedBytes.Add(evictedBytes)
	if err != nil || !keep {
		return false, err
	}
	s.stats.commits.Add(1)
	return true, nil
}

// newEntry returns the entry of a verified temp file, read for its
// references if it may be a manifest.
func (s *Store) newEntry(dgst digest.Digest, size int64, mediaType string, f *os.File) *entry {
	e := &entry{size: size, mediaType: mediaType}
	if !mayBeManifest(mediaType, size) {
		return e
	}
	var err error
	if e.kind, e.refs, err = classify(dgst, mediaType, size, f); err != nil {
		// Stored unclassified: the next Open reads it again.
		s.log.Warn("cache: cannot read entry for its references", "digest", dgst, "error", err)
	} else {
		e.classified = true
	}
	return e
}

// makeRoomLocked evicts the units pick names (nil: none left), least
// recently used first, until size more bytes fit in the budget, marking
// the victims busy with done, and returns them and their bytes. fits is
// false when size cannot fit: the victims are then taken for nothing, and
// the caller removes them.
func (s *Store) makeRoomLocked(size int64, done chan struct{}, pick func() []digest.Digest) (victims []digest.Digest, evictedBytes int64, fits bool) {
	for s.sizeLocked()+size > s.maxSize {
		if size > s.maxSize-s.g.pinnedBytes {
			// Content pinned while this waited (a Pin, or pinned
			// content that landed) leaves no room any more.
			return victims, evictedBytes, false
		}
		if unit := pick(); len(unit) > 0 {
			evictedBytes += s.g.bytesOf(unit)
			for _, v := range unit {
				s.busy[v] = done
			}
			s.dropLocked(unit...)
			victims = append(victims, unit...)
			continue
		}
		if s.reserved == 0 {
			// Nothing left to evict but pinned content or what the
			// caller keeps: size does not fit.
			return victims, evictedBytes, false
		}
		// Only other commits' reservations are left; once they land in
		// the store they can be evicted.
		s.cond.Wait()
	}
	return victims, evictedBytes, true
}

// discard drops a verified temp file that does not fit: larger than the
// budget, or than the room pinned content leaves of it.
func (s *Store) discard(dgst digest.Digest, size, room int64, tmpPath string) {
	s.stats.discarded.Add(1)
	s.log.Debug("cache: entry larger than the unpinned budget not kept", "digest", dgst, "size", size,
		"max_size", s.maxSize, "room_beside_pins", room)
	s.dropTemp(tmpPath)
}

// removeEvicted unlinks the files and deletes the index records of
// entries evicted for a commit that was then not kept.
func (s *Store) removeEvicted(victims []digest.Digest) {
	if len(victims) == 0 {
		return
	}
	for _, v := range victims {
		if err := removeFile(s.blobPath(v)); err != nil {
			// Left for reconcile at the next Open; it is no longer indexed.
			s.log.Warn("cache: remove evicted file", "digest", v, "error", err)
		}
	}
	s.idxMu.RLock()
	if err := writeIndex(s.db, nil, victims); err != nil {
		s.log.Warn("cache: delete evicted index records", "error", err)
	}
	s.idxMu.RUnlock()
}

// install makes a temp file durable, moves it into place and indexes it,
// after unlinking the files of the entries evicted for it. On failure
// nothing of dgst remains.
func (s *Store) install(dgst digest.Digest, e *entry, f *os.File, tmpPath string, victims []digest.Digest) error {
	err := f.Sync()
	if err != nil {
		err = fmt.Errorf("sync temp file %s: %w", tmpPath, err)
	}
	for _, v := range victims {
		if rerr := removeFile(s.blobPath(v)); rerr != nil {
			// Left for reconcile at the next Open; it is no longer indexed.
			s.log.Warn("cache: remove evicted file", "digest", v, "error", rerr)
		}
	}
	final := s.blobPath(dgst)
	if err == nil {
		err = ensureDir(filepath.Dir(final))
	}
	if err == nil {
		err = os.Rename(tmpPath, final)
	}
	if err == nil {
		if err = syncDir(filepath.Dir(final)); err != nil {
			removeFile(final)
		}
	}
	s.idxMu.RLock()
	if err == nil {
		if err = writeIndex(s.db, []indexRecord{{dgst: dgst, e: e, refs: e.classified}}, victims); err != nil {
			removeFile(final)
			err = fmt.Errorf("write index: %w", err)
		}
	} else if ierr := writeIndex(s.db, nil, victims); ierr != nil {
		s.log.Warn("cache: delete evicted index records", "error", ierr)
	}
	s.idxMu.RUnlock()
	if err != nil {
		removeFile(tmpPath)
		return fmt.Errorf("cache: commit %s: %w", dgst, err)
	}
	return nil
}

// dropTemp removes a temp file that is no longer needed. Followers keep
// reading it through the writer's open descriptor. A failure only leaks the
// file until the next Open, so it is logged rather than returned.
func (s *Store) dropTemp(path string) {
	if path == "" {
		return
	}
	if err := removeFile(path); err != nil {
		s.log.Warn("cache: remove temp file", "path", path, "error", err)
	}
}

// removeEntry unlinks the file and deletes the records of an entry
// already taken out of the store and marked busy.
func (s *Store) removeEntry(dgst digest.Digest) error {
	var errs []error
	if err := removeFile(s.blobPath(dgst)); err != nil {
		errs = append(errs, fmt.Errorf("cache: remove %s: %w", dgst, err))
	}
	s.idxMu.RLock()
	if err := writeIndex(s.db, nil, []digest.Digest{dgst}); err != nil {
		errs = append(errs, fmt.Errorf("cache: remove %s from index: %w", dgst, err))
	}
	s.idxMu.RUnlock()
	return errors.Join(errs...)
}

// waitIdleLocked waits, with s.mu held, until no disk change of dgst is in
// flight. It fails once the store is closed.
func (s *Store) waitIdleLocked(dgst digest.Digest) error {
	for {
		if s.closed {
			return ErrClosed
		}
		ch, ok := s.busy[dgst]
		if !ok {
			return nil
		}
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
	}
}

// markBusyLocked marks dgst busy and registers an operation that Close
// waits for; endBusy undoes both.
func (s *Store) markBusyLocked(dgst digest.Digest) chan struct{} {
	done := make(chan struct{})
	s.busy[dgst] = done
	s.ops.Add(1)
	return done
}

func (s *Store) endBusy(done chan struct{}, dgst digest.Digest) {
	s.mu.Lock()
	delete(s.busy, dgst)
	close(done)
	s.mu.Unlock()
	s.ops.Done()
}

// sizeLocked is the bytes counted against maxSize: the stored entries
// and the reservations of commits being installed.
func (s *Store) sizeLocked() int64 { return s.g.bytes + s.reserved }

func (s *Store) syncSizeLocked() {
	s.stats.bytes.Store(s.sizeLocked())
	s.stats.entries.Store(s.g.entries)
	s.stats.pinnedBytes.Store(s.g.pinnedBytes)
}

// dropLocked takes stored entries out of the graph and the accounting,
// and forgets the links of what is then neither stored nor referenced.
func (s *Store) dropLocked(dgsts ...digest.Digest) {
	s.forgetLinksLocked(s.g.drop(dgsts...))
	s.syncSizeLocked()
}

// evictOldestLocked takes the least recently used image (or loose entry)
// out of the store as a unit and returns its members and their bytes;
// the caller removes their files and records. It returns nothing when
// nothing but pinned content is stored.
func (s *Store) evictOldestLocked() (unit []digest.Digest, bytes int64) {
	unit = s.g.oldestUnit()
	if len(unit) == 0 {
		return nil, 0
	}
	bytes = s.g.bytesOf(unit)
	s.dropLocked(unit...)
	return unit, bytes
}

func (s *Store) flushLoop(every time.Duration) {
	defer close(s.flushDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.flushAccess(); err != nil {
				// Nobody to return it to; the next flush retries.
				s.log.Warn("cache: persist access times", "error", err)
			}
		}
	}
}

// flushAccess writes the access times marked dirty by Get to the index in
// one batch. Records that fail to write are marked dirty again.
func (s *Store) flushAccess() error {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	s.mu.Lock()
	recs := s.g.takeDirty()
	s.mu.Unlock()
	err := writeIndex(s.db, recs, nil)
	if err == nil {
		return nil
	}
	s.mu.Lock()
	s.g.markDirty(recs)
	s.mu.Unlock()
	return fmt.Errorf("cache: persist %d access times: %w", len(recs), err)
}
