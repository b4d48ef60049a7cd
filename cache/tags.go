package cache

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// tagKeyPrefix starts the Badger key of every tag record of the main
// upstream written without its host (Repo.Registry ""), and
// hostTagKeyPrefix that of every other tag record (layout in doc.go).
const (
	tagKeyPrefix     = "tag/"
	hostTagKeyPrefix = "tag@"
)

const (
	tagRecordVersion   = 1
	tagRecordHeaderLen = 1 + 8 + 8 + 1
)

// AnyAccept is the Accept value of a tag record not tied to one Accept
// header: the record an import writes, which a lookup may fall back to.
// It normalises to itself; so does every Accept that names no manifest
// type (none at all, "*/*"), so such clients share it.
const AnyAccept = "*/*"

// TagRecord is the last answer upstream gave for a tag asked with one
// Accept header: the manifest it named and when.
type TagRecord struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	// Checked is when upstream gave this answer.
	Checked time.Time
}

// tagStore keeps the tag records in the index (tag/ keys, layout in
// doc.go): upstream's last answer for a tag, one per Accept. It knows
// nothing of blobs or the image graph. Its callers validate the keys and
// make sure the index is open (Store.beginTagOp).
type tagStore struct {
	db  *badger.DB
	log *slog.Logger
	// mu serialises put, which reads a tag's records to bound them.
	mu sync.Mutex
}

// maxTagRecords bounds the records kept per tag: one per distinct set of
// manifest types asked for, and real clients ask for a handful. PutTag
// drops the least recently checked records past it.
const maxTagRecords = 8

// PutTag records rec as the answer for repo:tag asked with accept (an
// Accept header value; values naming the same manifest types share a
// record, see NormalizeAccept). It replaces the previous record, and
// drops the least recently checked records of the tag beyond
// maxTagRecords.
//
// Tag records are advisory, so PutTag does not wait for the write: it is
// visible to GetTag at once and durable after Close. A write that fails
// later is logged.
func (s *Store) PutTag(repo Repo, tag, accept string, rec TagRecord) error {
	key, err := tagKey(repo, tag, accept)
	if err != nil {
		return err
	}
	if err := checkDigest(rec.Digest); err != nil {
		return fmt.Errorf("cache: put tag %s:%s: %w", repo, tag, err)
	}
	if rec.Size < 0 || len(rec.MediaType) > maxMediaTypeLen {
		return fmt.Errorf("cache: put tag %s:%s: invalid size %d or media type of %d bytes", repo, tag, rec.Size, len(rec.MediaType))
	}
	if err := s.beginTagOp(true); err != nil {
		return fmt.Errorf("cache: put tag %s:%s: %w", repo, tag, err)
	}
	// Close waits for s.ops, so the write lands before the index closes.
	err = s.tags.put(repo, tag, key, legacyTagKey(repo, tag, accept), rec, func(err error) {
		defer s.ops.Done()
		if err != nil {
			s.log.Warn("cache: record tag", "repository", repo, "tag", tag, "error", err)
		}
	})
	if err != nil {
		s.ops.Done()
		return fmt.Errorf("cache: put tag %s:%s: %w", repo, tag, err)
	}
	return nil
}

// put sets key, the record of repo:tag for one Accept, to rec without
// waiting for the write: done receives the commit's outcome. It returns
// the error that stopped it before the commit, and then never calls
// done. legacy is the key older versions gave the same Accept.
func (ts *tagStore) put(repo Repo, tag string, key, legacy []byte, rec TagRecord, done func(error)) error {
	// One put at a time reads a tag's records and writes: each sees the
	// writes before it (Badger's read timestamp waits for commits
	// already sent), so the bound holds under concurrent puts.
	ts.mu.Lock()
	defer ts.mu.Unlock()
	txn := ts.db.NewTransaction(true)
	if err := setTag(txn, repo, tag, key, legacy, rec); err != nil {
		txn.Discard()
		return err
	}
	txn.CommitWith(done)
	return nil
}

// setTag sets key to rec in txn and deletes the record under legacy (the
// same Accept keyed as older versions did), records of the tag that do
// not parse, and the least recently checked ones past maxTagRecords.
func setTag(txn *badger.Txn, repo Repo, tag string, key, legacy []byte, rec TagRecord) error {
	type other struct {
		key     []byte
		checked time.Time
	}
	var others []other
	var drop [][]byte
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 2 * maxTagRecords, Prefix: []byte(tagPrefix(repo) + tag + "/")})
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.KeyCopy(nil)
		if r, t, ok := parseTagKey(string(k)); !ok || r != repo || t != tag || slices.Equal(k, key) {
			continue // another repository's key with this prefix, or the one replaced
		}
		if slices.Equal(k, legacy) {
			drop = append(drop, k)
			continue
		}
		var old TagRecord
		if err := item.Value(func(v []byte) (err error) { old, err = decodeTagRecord(v); return err }); err != nil {
			drop = append(drop, k)
			continue
		}
		others = append(others, other{k, old.Checked})
	}
	it.Close()
	if n := len(others) - (maxTagRecords - 1); n > 0 {
		slices.SortFunc(others, func(a, b other) int { return a.checked.Compare(b.checked) })
		for _, o := range others[:n] {
			drop = append(drop, o.key)
		}
	}
	for _, k := range drop {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return txn.Set(key, encodeTagRecord(rec))
}

// GetTag returns the record of repo:tag asked with accept, or an error
// wrapping ErrNotFound when there is none.
func (s *Store) GetTag(repo Repo, tag, accept string) (TagRecord, error) {
	key, err := tagKey(repo, tag, accept)
	if err != nil {
		return TagRecord{}, err
	}
	if err := s.beginTagOp(false); err != nil {
		return TagRecord{}, fmt.Errorf("cache: get tag %s:%s: %w", repo, tag, err)
	}
	defer s.ops.Done()
	rec, err := s.tags.get(key, legacyTagKey(repo, tag, accept))
	if err != nil {
		return TagRecord{}, fmt.Errorf("cache: get tag %s:%s: %w", repo, tag, err)
	}
	return rec, nil
}

// get returns the record under key, or else under legacy (the key an
// older version gave the same Accept), or ErrNotFound.
func (ts *tagStore) get(key, legacy []byte) (TagRecord, error) {
	var rec TagRecord
	err := ts.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			// A record an older version wrote for the same Accept.
			item, err = txn.Get(legacy)
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			rec, err = decodeTagRecord(v)
			return err
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return TagRecord{}, ErrNotFound
	}
	return rec, err
}

// beginTagOp registers an index operation that Close waits for, unless the
// store is closed (or read-only, for a write); the caller ends it with
// s.ops.Done.
func (s *Store) beginTagOp(write bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if write && s.readOnly {
		return ErrReadOnly
	}
	s.ops.Add(1)
	return nil
}

// tagKey is tag@<registry>/<repo>/<tag>/<hex sha256 of the normalised
// accept>, or tag/<repo>/... for Registry "". A registry never contains
// "/" and a tag never does, so the key is unambiguous however many
// components the repository name has.
func tagKey(repo Repo, tag, accept string) ([]byte, error) {
	if err := checkTagRef(repo, tag); err != nil {
		return nil, err
	}
	return hashedTagKey(repo, tag, NormalizeAccept(accept)), nil
}

// checkTagRef checks that repo:tag can key a tag record.
func checkTagRef(repo Repo, tag string) error {
	if repo.validate() != nil || tag == "" || strings.Contains(tag, "/") {
		return fmt.Errorf("cache: invalid tag reference %q:%q", repo, tag)
	}
	return nil
}

// tagPrefix starts the keys of repo's tag records, up to the tag.
func tagPrefix(repo Repo) string {
	if repo.Registry == "" {
		return tagKeyPrefix + repo.Name + "/"
	}
	return hostTagKeyPrefix + repo.Registry + "/" + repo.Name + "/"
}

// legacyTagKey is the key versions before NormalizeAccept dropped
// unknown types gave a record for accept; it equals tagKey's for an
// Accept naming only manifest types. repo and tag are valid.
func legacyTagKey(repo Repo, tag, accept string) []byte {
	return hashedTagKey(repo, tag, strings.Join(acceptTypes(accept), ","))
}

func hashedTagKey(repo Repo, tag, normalized string) []byte {
	sum := sha256.Sum256([]byte(normalized))
	return []byte(tagPrefix(repo) + tag + "/" + hex.EncodeToString(sum[:]))
}

// NormalizeAccept reduces an Accept header value to the manifest media
// types it names (IsManifestType), sorted and comma-joined: values that
// ask for the same manifests map to the same record, whatever else they
// name, however they are spelled (case, parameters, order, repeats).
// A value naming no manifest type ("*/*", none at all, only other types)
// is AnyAccept. The key space of one tag is thus bounded by the subsets
// of the few manifest types.
func NormalizeAccept(accept string) string {
	types := slices.DeleteFunc(acceptTypes(accept), func(mt string) bool { return !IsManifestType(mt) })
	if len(types) == 0 {
		return AnyAccept
	}
	return strings.Join(types, ",")
}

// acceptTypes returns the media types of an Accept header value, without
// parameters, lowercased, sorted and deduplicated.
func acceptTypes(accept string) []string {
	var types []string
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, _ := strings.Cut(part, ";")
		if mt = strings.ToLower(strings.TrimSpace(mt)); mt != "" {
			types = append(types, mt)
		}
	}
	slices.Sort(types)
	return slices.Compact(types)
}

// encodeTagRecord encodes rec as a version 1 tag record (layout in doc.go).
func encodeTagRecord(rec TagRecord) []byte {
	d := rec.Digest.String()
	b := make([]byte, tagRecordHeaderLen, tagRecordHeaderLen+len(d)+len(rec.MediaType))
	b[0] = tagRecordVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(rec.Size))
	binary.BigEndian.PutUint64(b[9:17], uint64(rec.Checked.UnixNano()))
	b[17] = byte(len(d)) // a checked sha256 digest is 71 bytes
	b = append(b, d...)
	return append(b, rec.MediaType...)
}

// decodeTagRecord parses a record written by encodeTagRecord.
func decodeTagRecord(b []byte) (TagRecord, error) {
	if len(b) < tagRecordHeaderLen {
		return TagRecord{}, fmt.Errorf("tag record of %d bytes is shorter than its %d-byte header", len(b), tagRecordHeaderLen)
	}
	if b[0] != tagRecordVersion {
		return TagRecord{}, fmt.Errorf("tag record version %d is not supported (want %d)", b[0], tagRecordVersion)
	}
	n := int(b[17])
	if len(b) < tagRecordHeaderLen+n {
		return TagRecord{}, fmt.Errorf("tag record of %d bytes is too short for its %d-byte digest", len(b), n)
	}
	rec := TagRecord{
		Size:      int64(binary.BigEndian.Uint64(b[1:9])),
		Checked:   time.Unix(0, int64(binary.BigEndian.Uint64(b[9:17]))),
		Digest:    digest.Digest(b[tagRecordHeaderLen : tagRecordHeaderLen+n]),
		MediaType: string(b[tagRecordHeaderLen+n:]),
	}
	if err := checkDigest(rec.Digest); err != nil {
		return TagRecord{}, err
	}
	if rec.Size < 0 {
		return TagRecord{}, fmt.Errorf("tag record has negative size %d", rec.Size)
	}
	return rec, nil
}

// TagInfo is one tag record as listed by Store.Tags. The Accept header
// the record answers is not kept, only its hash, so records of one tag
// asked with different Accept values are told apart by what they name.
type TagInfo struct {
	// Registry is the upstream's host; "" for the main upstream's
	// records written without it (Repo.Registry).
	Registry  string
	Repo, Tag string
	Digest    digest.Digest
	MediaType string
	Size      int64
	// Checked is when upstream (or an import) gave this answer.
	Checked time.Time
}

// Tags returns every tag record, one per tag and Accept value, sorted by
// registry, repository, tag, then most recently checked first. Records that do not
// parse are skipped and logged.
func (s *Store) Tags() ([]TagInfo, error) {
	if err := s.beginTagOp(false); err != nil {
		return nil, fmt.Errorf("cache: list tags: %w", err)
	}
	defer s.ops.Done()
	out, err := s.tags.list()
	if err != nil {
		return nil, fmt.Errorf("cache: list tags: %w", err)
	}
	return out, nil
}

// list returns every tag record, sorted as Store.Tags says, skipping
// and logging those that do not parse.
func (ts *tagStore) list() ([]TagInfo, error) {
	var out []TagInfo
	err := ts.db.View(func(txn *badger.Txn) error {
		for _, prefix := range []string{tagKeyPrefix, hostTagKeyPrefix} {
			out = ts.listPrefix(txn, prefix, out)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b TagInfo) int {
		return cmp.Or(cmp.Compare(a.Registry, b.Registry), cmp.Compare(a.Repo, b.Repo), cmp.Compare(a.Tag, b.Tag), b.Checked.Compare(a.Checked))
	})
	return out, nil
}

// listPrefix appends the tag records under prefix to out.
func (ts *tagStore) listPrefix(txn *badger.Txn, prefix string, out []TagInfo) []TagInfo {
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefix)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		key := string(item.Key())
		repo, tag, ok := parseTagKey(key)
		if !ok {
			ts.log.Warn("cache: skipped tag record with a bad key", "key", key)
			continue
		}
		var rec TagRecord
		err := item.Value(func(v []byte) error {
			var err error
			rec, err = decodeTagRecord(v)
			return err
		})
		if err != nil {
			ts.log.Warn("cache: skipped bad tag record", "key", key, "error", err)
			continue
		}
		out = append(out, TagInfo{Registry: repo.Registry, Repo: repo.Name, Tag: tag, Digest: rec.Digest, MediaType: rec.MediaType, Size: rec.Size, Checked: rec.Checked})
	}
	return out
}

// DeleteTags removes every record of repo:tag, whatever Accept it
// answered, and returns how many there were. The removal is durable when
// DeleteTags returns.
func (s *Store) DeleteTags(repo Repo, tag string) (int, error) {
	if err := checkTagRef(repo, tag); err != nil {
		return 0, fmt.Errorf("cache: delete tags: %w", err)
	}
	prefix := tagPrefix(repo) + tag + "/"
	n, err := s.deleteTagKeys(prefix, func(key string) bool {
		r, t, ok := parseTagKey(key)
		// The prefix of team/app:v1 also starts the records of the
		// repository team/app/v1.
		return ok && r == repo && t == tag
	})
	if err != nil {
		return n, fmt.Errorf("cache: delete tags of %s:%s: %w", repo, tag, err)
	}
	return n, nil
}

// DeleteAllTags removes every tag record and returns how many there
// were. The removal is durable when DeleteAllTags returns.
func (s *Store) DeleteAllTags() (int, error) {
	n, err := s.deleteTagKeys(tagKeyPrefix, func(string) bool { return true })
	if err == nil {
		var m int
		m, err = s.deleteTagKeys(hostTagKeyPrefix, func(string) bool { return true })
		n += m
	}
	if err != nil {
		return n, fmt.Errorf("cache: delete all tags: %w", err)
	}
	return n, nil
}

// deleteTagKeys deletes the tag records under prefix that match and
// returns how many.
func (s *Store) deleteTagKeys(prefix string, match func(key string) bool) (int, error) {
	if err := s.beginTagOp(true); err != nil {
		return 0, err
	}
	defer s.ops.Done()
	return s.tags.delete(prefix, match)
}

// delete deletes the keys under prefix that match, in one synced batch,
// and returns how many.
func (ts *tagStore) delete(prefix string, match func(key string) bool) (int, error) {
	var keys [][]byte
	err := ts.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if key := it.Item().KeyCopy(nil); match(string(key)) {
				keys = append(keys, key)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := writeIndexKeys(ts.db, nil, keys); err != nil {
		return 0, err
	}
	return len(keys), nil
}

// parseTagKey splits a tag record key, tag/<repo>/<tag>/<64 hex> or
// tag@<registry>/<repo>/<tag>/<64 hex>: the registry up to its "/", the
// rest from the right, since the repository may contain "/" and the tag
// never does.
func parseTagKey(key string) (repo Repo, tag string, ok bool) {
	rest, found := strings.CutPrefix(key, tagKeyPrefix)
	if !found {
		if rest, found = strings.CutPrefix(key, hostTagKeyPrefix); !found {
			return Repo{}, "", false
		}
		if repo.Registry, rest, found = strings.Cut(rest, "/"); !found || repo.Registry == "" {
			return Repo{}, "", false
		}
	}
	name, tag, ok := splitTagKeyName(rest)
	repo.Name = name
	return repo, tag, ok
}

// splitTagKeyName splits <repo>/<tag>/<64 hex> from the right.
func splitTagKeyName(rest string) (repo, tag string, ok bool) {
	i := strings.LastIndexByte(rest, '/')
	if i < 0 || len(rest)-i-1 != hex.EncodedLen(sha256.Size) || !isHex(rest[i+1:]) {
		return "", "", false
	}
	rest = rest[:i]
	j := strings.LastIndexByte(rest, '/')
	if j <= 0 || j == len(rest)-1 {
		return "", "", false
	}
	return rest[:j], rest[j+1:], true
}
