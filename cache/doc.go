// Package cache is the digest-verified content store of the mirror: it keeps
// blobs and manifests, both addressed by their sha256 digest, in files under
// one directory, indexes them in an embedded Badger database and evicts the
// least recently used images, each as a unit, to stay within a byte budget.
// It knows nothing about HTTP or registries; it reads OCI and Docker
// manifests only for the digests they reference.
//
// # Where each concern lives
//
// Store (store.go) composes the parts below under its one mutex and
// owns the lifecycle (Open, Close, busy digests, reservations, Stats):
//
//   - the image graph (graph.go): the unexported graph type holds the
//     stored entries and their sizes, what references what, the LRU
//     order of the eviction candidates, the pins and the pinned content;
//     it inserts, drops, computes eviction units, the oldest unit and an
//     image's closure, and check() verifies its invariants. It touches no
//     file and no record, so its rules are tested alone (graph_test.go);
//   - blob files: paths.go (layout), writer.go (Writer, followers, the
//     disk-full relay), stage.go (admitting content together),
//     reconcile.go (what Open cleans up), perm.go (modes);
//   - Badger records: index.go (blob/ and ref/ records, the index
//     options), refs.go (reading manifests for their references, ref/
//     encoding), pins.go (Pin, Unpin, pin/ records), links.go (Link,
//     link/ records);
//   - tag records (tags.go): the unexported tagStore type reads, bounds,
//     lists and deletes the tag/ records in the index; the Store's tag
//     methods validate, check the store is open and delegate to it;
//   - referrers records (referrers.go): the unexported referrersStore
//     type keeps upstream's last referrers answers (referrers/ records),
//     bounded per subject, apart from tags;
//   - operator actions: purge.go, inspect.go, mediatype.go, readonly.go.
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
//	│   ├── <12 hex>-<random>       downloads in progress (os.CreateTemp)
//	│   └── stage-<random>/<64 hex> content staged to be admitted together (Stage)
//	└── index/                      Badger database (holds the directory lock)
//
// Everything is owner-only: directories 0700, files 0600, Badger's own
// included; Open fixes what an older version or the umask left looser,
// never following a symlink (perm.go).
//
// Nothing is removed or written through a symlink. Open refuses, naming
// it, a Dir whose blobs/, blobs/sha256/, tmp/ or index/ (or a Badger file
// in index/) is a symlink, before creating anything; Dir itself may be
// one. Links deeper down are leftovers: reconcile removes the link
// itself, never its target.
//
// A download is written to tmp/, hashed while it is written, fsynced, renamed
// into blobs/ and the directory fsynced; only then is the index entry written
// (a synced Badger write). A crash therefore leaves at worst a temp file or an
// unindexed blob file, and Open removes both.
//
// # Badger key layout
//
//	blob/<algorithm>:<hex>              →  record, one per committed entry
//	ref/<algorithm>:<hex>               →  ref record: what the entry references
//	pin/<algorithm>:<hex>               →  pin record, one per pinned image
//	tag@<registry>/<repository>/<tag>/<accept>
//	                                    →  tag record, one per upstream, tag and Accept
//	tag/<repository>/<tag>/<accept>     →  the same, of the main upstream, written
//	                                       without its host (Registry "")
//	link/<algorithm>:<hex>/<registry>/<repository>
//	                                    →  empty: upstream holds the digest in that repository
//	referrers/<algorithm>:<hex>/<registry>/<repository>/<query>
//	                                    →  referrers record, one per subject, repository,
//	                                       filter and page
//	meta/links                          →  set once the links of an older directory are derived
//	stage/stage-<random>                →  journal of an admission in progress: the
//	                                       digests it adds, 32 raw bytes each
//
// A record is a compact binary value with a leading version byte:
//
//	offset  size  field
//	0       1     version (1)
//	1       8     size in bytes, uint64 big-endian
//	9       8     last access, unix nanoseconds, int64 big-endian
//	17      n     media type, UTF-8, the rest of the value
//
// A ref record says what a committed entry references. It is written in
// the same batch as the entry's first blob/ record and deleted with it,
// never rewritten (content addressing makes it immutable; access-time
// flushes touch only blob/ records). Only entries that may be manifests
// have one: a manifest media type, or a generic one ("", octet-stream,
// JSON, text) on content of at most 4 MiB, ECR's manifest limit.
//
//	offset  size  field
//	0       1     version (1)
//	1       1     kind: 0 opaque, 1 image manifest, 2 index
//	2       4     n, the number of references, uint32 big-endian
//	6       32n   the referenced sha256 digests, raw, sorted
//
// A manifest (OCI image manifest, Docker schema2 manifest) references its
// config and layers; an index (OCI index, Docker manifest list) its
// manifests. Content stored with a generic media type is a manifest when
// it is a JSON object whose mediaType field names one of those four. The
// subject of an OCI artifact is not a reference. Content that does not
// parse is opaque (kind 0, n 0); so are Docker schema1 manifests. An entry
// without a ref record that may be a manifest (stored by an older version,
// or its read failed) is read at the next Open, once.
//
// A tag record (Store.PutTag) is an upstream's last answer for a tag
// asked with one Accept header, keyed by the upstream registry's host
// (Repo.Registry, which holds no "/"). Records of Registry "" keep the
// layout versions before several upstreams wrote for every record,
// tag/<repository>/...: they belong to the main upstream, as links
// without a host do (the proxy reads them beside its own), and are what
// an import into a stopped mirror that does not know its host writes.
// <accept> is the hex sha256 of that header
// normalised to the manifest media types it names (without parameters,
// lowercased, sorted, deduplicated, comma-joined; other types dropped),
// so headers asking for the same manifests share a record. A header
// naming no manifest type (none, "*/*") normalises to AnyAccept ("*/*"),
// also the record an import writes. A tag keeps at most 8 records: a put
// past that drops the least recently checked. Records that versions
// before kept under a key hashed from every type of the header are read
// for the same header and replaced when it is recorded again.
// Repository names may contain "/", tags never do, so a key is parsed
// from the right. Tag records are advisory: written
// without waiting (durable at Close), never counted against MaxSize, and
// not removed with the manifest they name; DeleteTags and DeleteAllTags
// remove them (durably).
//
//	offset  size  field
//	0       1     version (1)
//	1       8     manifest size in bytes, uint64 big-endian
//	9       8     when upstream answered, unix nanoseconds, int64 big-endian
//	17      1     n, the length of the digest
//	18      n     manifest digest, "sha256:<hex>"
//	18+n    m     media type, UTF-8, the rest of the value
//
// A referrers record (Store.PutReferrers) is upstream's last answer of
// the referrers API for a subject digest in a repository of a registry
// (cache.Repo, as links; registry "" is the main upstream), asked with
// one artifactType filter and page; <query> is the hex sha256 of the
// filter's length in decimal, ":", the filter, then the page query
// (normalised by the caller). The subject comes first, so a subject's
// records are one prefix (DeleteReferrers); registries hold no "/" and
// the hash is fixed-length, so a key parses from both ends. A repository
// and subject keep at most 16 records (a put past that drops the least
// recently checked); a body is at most MaxReferrersBody (48 KiB, some
// 130 referrers; a larger answer is served, not recorded) and each query
// field at most 2 KiB, so a record stays in Badger's LSM tree. Like tag
// records they are advisory (written without waiting, never counted
// against MaxSize). Purges remove them with their subject.
//
//	offset  size  field
//	0       1     version (1)
//	1       8     when upstream answered, unix nanoseconds, int64 big-endian
//	9       1     flags: bit 0, built from the tag schema (no referrers API)
//	10      2     a, length of the artifactType filter, uint16 big-endian
//	12      2     p, length of the page query
//	14      2     f, length of the OCI-Filters-Applied value served
//	16      2     q, length of the next page's query ("" on the last page)
//	18      ...   the filter, page, filters applied and next query, then
//	              the OCI image index served, the rest of the value
//
// A pin record (Store.Pin) keeps the image rooted at its digest from
// being evicted. It is written synchronously and outlives the content:
// an image whose content was deleted stays pinned, and content fetched
// again under it is pinned as it lands. Its names are free-form labels
// (such as "team/app:v1"), sorted, each at most 512 bytes.
//
//	offset  size  field
//	0       1     version (1)
//	1       8     when first pinned, unix nanoseconds, int64 big-endian
//	9       2     n, the number of names, uint16 big-endian
//	11      ...   n names, each a uint16 big-endian length and that many
//	              bytes of UTF-8
//
// # Links
//
// Content is shared, access is not: Store.Link records that an upstream
// registry holds a digest in a repository (a link/ key), and a linked
// manifest links what it references, transitively. Links live in memory
// too (Store.Linked is a map lookup), are written synchronously, and are
// dropped with the content they point to, and with what that content
// referenced that nothing stored references any more; at Open, links to
// content neither stored nor referenced by a stored manifest are
// dropped. The first Open of a directory written before links derives
// them from its tag records, under the main upstream (Registry "").
//
// # Images and eviction
//
// In memory the store's graph (graph.go) keeps every entry (a map), the
// references of each stored manifest, and the reverse links: for every
// digest, the stored manifests that reference it, whether or not that
// digest is stored yet.
// A manifest links its references when it is installed, so content that
// lands after its manifest (the normal pull order) is linked as it lands,
// and content already stored is linked at once.
//
// An entry that no stored manifest references is a root: a manifest of an
// image (not in a stored index), an index, or loose content (a blob no
// known manifest references). Only roots are eviction candidates, kept in
// least-recently-used order (simplelru). When a commit needs room the
// store takes the least recently used root and evicts it as a unit with
// everything it references, transitively (index → manifests → config and
// layers), that no stored manifest outside the unit references. Content a
// stored manifest references is therefore never evicted while that
// manifest stays: every stored manifest whose content was all fetched stays
// pullable whole with upstream down. Loose content is plain LRU. Evicting
// whole units may free more than the commit needs; MaxSize stays a hard
// bound (reservations as before).
//
// # Pins and purges
//
// An operator pins an image (Store.Pin) to keep it whatever the traffic.
// Pinned content is the stored entries reachable from a stored pinned
// root through stored manifests; the store keeps that set and its bytes
// up to date (content joins as it lands; the set is computed again on
// Unpin and when pinned content is deleted). A pinned root is never an
// eviction candidate, and a unit never takes pinned content: a pinned
// platform manifest under an unpinned index stays, whole, when the index
// goes. Pinned bytes count against MaxSize, so a Pin that would make
// them exceed it is refused, and a commit that cannot fit in what the
// pins leave is not kept (Stats.Discarded), decided before anything is
// evicted for it; like content larger than MaxSize, it leaves the stored
// manifest that references it incomplete. If MaxSize was lowered below the pinned bytes between
// runs, Open keeps every pin, evicts everything else and logs a warning;
// Size then exceeds MaxSize until pins are removed.
//
// Store.Purge and Store.PurgeUnused remove units as eviction computes
// them, while the store serves: they take the entries out under the
// lock and keep them busy until files and records are gone, like an
// eviction, so a concurrent commit of the same digest waits. They refuse
// or skip pinned content. Delete, meant for repairs, removes pinned
// content too.
//
// # Recency
//
// The least-recently-used order lives in memory. Get marks an entry used
// and its access time dirty; a background goroutine writes dirty access
// times to Badger every Options.AccessFlushInterval, and Close writes the
// rest. Open rebuilds the order of the roots from the persisted access
// times, so it survives restarts (up to one flush interval of accesses may
// be lost in a crash, which only makes eviction slightly less precise).
//
// Using content of an image is using the image: Get of a layer, config or
// child manifest that belongs to exactly one root (found through the
// reverse links), the commit of such content and Create of a writer for it
// also move that root to the front and update its access time. Content
// shared by several roots (a common base layer) moves none of them: the
// store cannot tell which image is being pulled, and refreshing every
// image built on a popular base at each pull would leave no LRU order
// among them. An image being pulled is refreshed by its own manifest,
// config and unshared layers.
//
// # Stages
//
// Content that must land together or not at all (an imported archive)
// goes through a Stage: each blob is written to tmp/stage-<random>/,
// verified against its digest and synced, invisible to the store and
// uncounted. Stage.Admit then admits everything in one step: it evicts
// room under the lock (never an image holding stored content the stage
// needs) and reserves the bytes, writes a journal record listing the
// digests it adds, renames the files into blobs/, writes their index
// records, and deletes the journal record, which is the commit point;
// only then does the content join the store in memory. A crash before
// the journal leaves only tmp/; after it, Open removes the files and
// records the journal lists, then the journal. Either way nothing of the
// stage remains.
//
// # Reconciliation
//
// Open never serves anything half-written. Before the store is returned it
// removes everything in tmp/, undoes the admissions a crash cut short
// (Stages), drops index entries whose file is missing or has
// another size (removing the file too), removes files under blobs/sha256 that
// are unindexed or not named by a valid digest, and evicts until the total
// fits MaxSize (the budget may have been lowered between runs), image by
// image as above. Content is not re-hashed at Open; the size check catches
// truncation. It also drops ref records whose entry is gone, rebuilds the
// reference links from the ref records and classifies entries that lack
// one. An eviction at Open is logged as a warning with its figures.
//
// Options.ReadOnly opens a store to look at it: the index under a shared
// lock in Badger's read-only mode (or, when its log ends in a crash's
// partial write, opened for writing only so that Badger can recover it,
// which changes no record), and the same view built without any of the
// changes above: leftovers are only left out of view (damaged entries
// stay in it, for Verify to report), nothing is evicted whatever MaxSize
// says, no mode is fixed, no link derived, and every method that would
// change the store returns ErrReadOnly.
//
// # Unlink semantics
//
// Eviction and Delete unlink files that readers may still have open: a file
// returned by Store.Get, or the temp file a Writer's followers read. The store
// relies on POSIX semantics (Linux): an unlinked file stays readable through
// open descriptors until the last one is closed, so such readers receive the
// complete, correct bytes. Disk space is reclaimed when they close.
//
// # Disk full
//
// A full disk never fails a download, and never kills the process.
//
// When a temp-file write fails with ENOSPC or EDQUOT, or free space on the
// cache filesystem (statfs, checked at Create and every 1 MiB written) is
// below the reserve, the Writer relays: the bytes already in the temp file
// stay readable there, the rest goes through a ring of 4 MiB in memory
// that the hasher and the followers read by offset. Write waits while the
// slowest of them (a follower whose context has ended is not waited for)
// is a whole ring behind, so memory stays bounded and the download is paced
// by its slowest client; ending a follower's context (the HTTP layer does
// when its client takes nothing for CLIENT_STALL_TIMEOUT) wakes Write at
// once and lets it go on without that follower. A reader that would need bytes that have already
// left the ring (one that starts too late) gets ErrNotBuffered, never
// wrong bytes. The last byte is held back and the digest verified as
// always. Commit then keeps nothing: it removes the temp file, indexes
// nothing, and returns kept=false with a nil error; a disk full at fsync
// or rename does the same. Each such download logs a warning and counts in
// Stats.DiskFull; the next download with room is stored as usual.
//
// The index is protected by a reserve. Badger maps its memtable files
// (write-ahead logs of 2 × 1 MiB), its value log (2 × 1 MiB) and its
// discard statistics sparse, and a store into an unallocated page of a
// mapped file on a full disk is a SIGBUS. Open allocates those files
// (fallocate), and temp files stop indexReserve bytes (8 MiB, four
// memtable files) short of a full filesystem, which covers the memtables
// and tables Badger creates afterwards. The reserve only holds against the
// store's own writes: size MaxSize to fit the filesystem minus the reserve
// and whatever else writes there.
//
// # Followers
//
// A Writer can be read while it is being written: Writer.NewReader returns a
// reader that follows the writer, blocking until more bytes land. Until the
// entry is committed, a follower never receives its final byte, so no client
// can be handed a complete body that later fails digest verification; after
// a failed verification or an abort followers get the error instead.
package cache
