// Package cache is the digest-verified content store of the mirror: it keeps
// blobs and manifests, both addressed by their sha256 digest, in files under
// one directory, indexes them in an embedded Badger database and evicts the
// least recently used entries to stay within a byte budget. It knows nothing
// about HTTP or registries.
//
// # On-disk layout
//
// Every path is built from a validated digest's algorithm and hex encoding
// only, so no input can name a path outside the root:
//
//	<Dir>/
//	├── blobs/
//	│   └── sha256/
//	│       └── <first 2 hex>/
//	│           └── <64 hex>        committed content, never written in place
//	├── tmp/
//	│   └── <12 hex>-<random>       downloads in progress (os.CreateTemp)
//	└── index/                      Badger database (holds the directory lock)
//
// A download is written to tmp/, hashed while it is written, fsynced, renamed
// into blobs/ and the directory fsynced; only then is the index entry written
// (a synced Badger write). A crash therefore leaves at worst a temp file or an
// unindexed blob file, and Open removes both.
//
// # Badger key layout
//
//	blob/<algorithm>:<hex>  →  record, one per committed entry
//	tag/...                 →  reserved for other packages (not touched here)
//
// A record is a compact binary value with a leading version byte:
//
//	offset  size  field
//	0       1     version (1)
//	1       8     size in bytes, uint64 big-endian
//	9       8     last access, unix nanoseconds, int64 big-endian
//	17      n     media type, UTF-8, the rest of the value
//
// # Recency
//
// The least-recently-used order lives in memory. Get moves an entry to the
// front and marks its access time dirty; a background goroutine writes dirty
// access times to Badger every Options.AccessFlushInterval, and Close writes
// the rest. Open rebuilds the order from the persisted access times, so it
// survives restarts (up to one flush interval of accesses may be lost in a
// crash, which only makes eviction slightly less precise).
//
// # Reconciliation
//
// Open never serves anything half-written. Before the store is returned it
// removes everything in tmp/, drops index entries whose file is missing or has
// another size (removing the file too), removes files under blobs/sha256 that
// are unindexed or not named by a valid digest, and evicts until the total
// fits MaxSize (the budget may have been lowered between runs). Content is
// not re-hashed at Open; the size check catches truncation.
//
// # Unlink semantics
//
// Eviction and Delete unlink files that readers may still have open: a file
// returned by Store.Get, or the temp file a Writer's followers read. The store
// relies on POSIX semantics (Linux): an unlinked file stays readable through
// open descriptors until the last one is closed, so such readers receive the
// complete, correct bytes. Disk space is reclaimed when they close.
//
// # Followers
//
// A Writer can be read while it is being written: Writer.NewReader returns a
// reader that follows the writer, blocking until more bytes land. Until the
// entry is committed, a follower never receives its final byte, so no client
// can be handed a complete body that later fails digest verification; after
// a failed verification or an abort followers get the error instead.
package cache
