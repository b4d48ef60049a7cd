package cache

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// referrersKeyPrefix starts the Badger key of every referrers record
// (layout in doc.go).
const referrersKeyPrefix = "referrers/"

// Bounds on referrers records, so that each subject costs a bounded
// amount of index space: at most maxReferrersRecords answers per
// repository and subject (one per filter and page asked), each body at
// most MaxReferrersBody bytes, and each query field at most
// maxReferrersField bytes. A record then stays under Badger's value
// threshold (64 KiB), in the LSM tree, which compaction reclaims.
const (
	maxReferrersRecords = 16
	// MaxReferrersBody is the largest referrers answer recorded; a
	// larger one (over 130 referrers or so) is served but not recorded.
	MaxReferrersBody  = 48 << 10
	maxReferrersField = 2 << 10

	referrersRecordVersion   = 1
	referrersRecordHeaderLen = 1 + 8 + 1 + 4*2
)

// ErrTooLarge is returned for a record over its bound.
var ErrTooLarge = errors.New("too large to record")

// ReferrersKey names one recorded answer of the referrers API: a
// subject's referrers in a repository, with the client's filter and
// page.
type ReferrersKey struct {
	Repo    Repo
	Subject digest.Digest
	// ArtifactType is the artifactType filter asked for; "" for none.
	ArtifactType string
	// Page is the rest of the query, normalised by the caller (the next
	// page's query, say); "" for the first page.
	Page string
}

func (k ReferrersKey) String() string {
	return k.Repo.String() + "@" + k.Subject.String()
}

func (k ReferrersKey) validate() error {
	if err := checkDigest(k.Subject); err != nil {
		return err
	}
	if err := k.Repo.validate(); err != nil {
		return err
	}
	if len(k.ArtifactType) > maxReferrersField || len(k.Page) > maxReferrersField {
		return fmt.Errorf("artifactType of %d or page query of %d bytes: %w (at most %d)", len(k.ArtifactType), len(k.Page), ErrTooLarge, maxReferrersField)
	}
	return nil
}

// ReferrersRecord is the last answer upstream gave for a ReferrersKey.
type ReferrersRecord struct {
	// Body is the OCI image index served, at most MaxReferrersBody.
	Body []byte
	// FiltersApplied is the OCI-Filters-Applied header served with it.
	FiltersApplied string
	// NextQuery is the next page's query; "" on the last page.
	NextQuery string
	// Fallback says the answer was built from the tag schema (upstream
	// has no referrers API).
	Fallback bool
	// Checked is when upstream gave this answer.
	Checked time.Time
}

// referrersStore keeps the referrers records in the index (referrers/
// keys, layout in doc.go), apart from tags, blobs and the image graph.
// Its callers validate the keys and make sure the index is open
// (Store.beginTagOp).
type referrersStore struct {
	db  *badger.DB
	log *slog.Logger
	// mu serialises put, which reads a subject's records to bound them.
	mu sync.Mutex
}

// referrersKey is referrers/<subject>/<registry>/<repository>/<hex
// sha256 of len(artifactType) ":" artifactType page> (the length in
// decimal, so that no two filter and page pairs share it). The subject
// comes first, so that a
// subject's records are one prefix; the registry holds no "/" and the
// hash none, so the key parses from both ends.
func referrersKey(k ReferrersKey) []byte {
	sum := sha256.Sum256([]byte(strconv.Itoa(len(k.ArtifactType)) + ":" + k.ArtifactType + k.Page))
	return []byte(referrersRepoPrefix(k.Repo, k.Subject) + hex.EncodeToString(sum[:]))
}

func referrersRepoPrefix(r Repo, subject digest.Digest) string {
	return referrersKeyPrefix + subject.String() + "/" + r.Registry + "/" + r.Name + "/"
}

// parseReferrersKey splits a referrers key; ok is false when it is
// malformed.
func parseReferrersKey(key string) (Repo, digest.Digest, bool) {
	rest, found := strings.CutPrefix(key, referrersKeyPrefix)
	if !found {
		return Repo{}, "", false
	}
	ds, rest, found := strings.Cut(rest, "/")
	if !found || checkDigest(digest.Digest(ds)) != nil {
		return Repo{}, "", false
	}
	reg, rest, found := strings.Cut(rest, "/")
	i := strings.LastIndexByte(rest, '/')
	if !found || i < 0 || len(rest)-i-1 != hex.EncodedLen(sha256.Size) || !isHex(rest[i+1:]) {
		return Repo{}, "", false
	}
	r := Repo{Registry: reg, Name: rest[:i]}
	if r.validate() != nil {
		return Repo{}, "", false
	}
	return r, digest.Digest(ds), true
}

// PutReferrers records rec as the answer for k. It replaces the previous
// record, and drops the least recently checked records of the same
// repository and subject beyond maxReferrersRecords. A body over
// MaxReferrersBody is refused (ErrTooLarge).
//
// Like PutTag, it does not wait for the write: the record is visible to
// GetReferrers at once and durable after Close; a write that fails later
// is logged.
func (s *Store) PutReferrers(k ReferrersKey, rec ReferrersRecord) error {
	if err := k.validate(); err != nil {
		return fmt.Errorf("cache: put referrers of %s: %w", k, err)
	}
	if len(rec.Body) > MaxReferrersBody || len(rec.FiltersApplied) > maxReferrersField || len(rec.NextQuery) > maxReferrersField {
		return fmt.Errorf("cache: put referrers of %s: answer of %d bytes (next query %d, filters %d): %w (at most %d)",
			k, len(rec.Body), len(rec.NextQuery), len(rec.FiltersApplied), ErrTooLarge, MaxReferrersBody)
	}
	if err := s.beginTagOp(true); err != nil {
		return fmt.Errorf("cache: put referrers of %s: %w", k, err)
	}
	err := s.referrers.put(k, rec, func(err error) {
		defer s.ops.Done()
		if err != nil {
			s.log.Warn("cache: record referrers", "repository", k.Repo.String(), "subject", k.Subject, "error", err)
		}
	})
	if err != nil {
		s.ops.Done()
		return fmt.Errorf("cache: put referrers of %s: %w", k, err)
	}
	return nil
}

// put sets k's record without waiting for the write (done receives the
// commit's outcome), and drops the oldest of its repository and subject
// past the bound. It returns the error that stopped it before the
// commit, and then never calls done.
func (rs *referrersStore) put(k ReferrersKey, rec ReferrersRecord, done func(error)) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	key := referrersKey(k)
	txn := rs.db.NewTransaction(true)
	type other struct {
		key     []byte
		checked int64
	}
	var others []other
	var drop [][]byte
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: maxReferrersRecords, Prefix: []byte(referrersRepoPrefix(k.Repo, k.Subject))})
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		kk := item.KeyCopy(nil)
		if r, _, ok := parseReferrersKey(string(kk)); !ok || r != k.Repo || slices.Equal(kk, key) {
			continue // a longer repository name with this prefix, or the one replaced
		}
		var checked int64
		err := item.Value(func(v []byte) (err error) { checked, err = referrersChecked(v); return err })
		if err != nil {
			drop = append(drop, kk)
			continue
		}
		others = append(others, other{kk, checked})
	}
	it.Close()
	if n := len(others) - (maxReferrersRecords - 1); n > 0 {
		slices.SortFunc(others, func(a, b other) int { return cmp.Compare(a.checked, b.checked) })
		for _, o := range others[:n] {
			drop = append(drop, o.key)
		}
	}
	for _, d := range drop {
		if err := txn.Delete(d); err != nil {
			txn.Discard()
			return err
		}
	}
	if err := txn.Set(key, encodeReferrersRecord(k, rec)); err != nil {
		txn.Discard()
		return err
	}
	txn.CommitWith(done)
	return nil
}

// GetReferrers returns the record of k, or an error wrapping ErrNotFound
// when there is none.
func (s *Store) GetReferrers(k ReferrersKey) (ReferrersRecord, error) {
	if err := k.validate(); err != nil {
		return ReferrersRecord{}, fmt.Errorf("cache: get referrers of %s: %w", k, err)
	}
	if err := s.beginTagOp(false); err != nil {
		return ReferrersRecord{}, fmt.Errorf("cache: get referrers of %s: %w", k, err)
	}
	defer s.ops.Done()
	var rec ReferrersRecord
	err := s.referrers.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(referrersKey(k))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) (err error) { _, rec, err = decodeReferrersRecord(v); return err })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		err = ErrNotFound
	}
	if err != nil {
		return ReferrersRecord{}, fmt.Errorf("cache: get referrers of %s: %w", k, err)
	}
	return rec, nil
}

// ReferrersInfo is one referrers record as listed by Store.Referrers.
type ReferrersInfo struct {
	Key ReferrersKey
	// Manifests is how many referrers the answer lists; Bytes its size.
	Manifests, Bytes int
	Fallback         bool
	Checked          time.Time
}

// Referrers returns every referrers record, sorted by subject,
// repository, then most recently checked first. Records that do not
// parse are skipped and logged.
func (s *Store) Referrers() ([]ReferrersInfo, error) {
	if err := s.beginTagOp(false); err != nil {
		return nil, fmt.Errorf("cache: list referrers: %w", err)
	}
	defer s.ops.Done()
	var out []ReferrersInfo
	err := s.referrers.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(referrersKeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var k ReferrersKey
			var rec ReferrersRecord
			err := item.Value(func(v []byte) (err error) { k, rec, err = decodeReferrersRecord(v); return err })
			r, subject, ok := parseReferrersKey(string(item.Key()))
			if err != nil || !ok {
				s.log.Warn("cache: skipped bad referrers record", "key", string(item.Key()), "error", err)
				continue
			}
			k.Repo, k.Subject = r, subject
			out = append(out, ReferrersInfo{Key: k, Manifests: countManifests(rec.Body), Bytes: len(rec.Body), Fallback: rec.Fallback, Checked: rec.Checked})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache: list referrers: %w", err)
	}
	slices.SortFunc(out, func(a, b ReferrersInfo) int {
		return cmp.Or(cmp.Compare(a.Key.Subject, b.Key.Subject), cmp.Compare(a.Key.Repo.String(), b.Key.Repo.String()), b.Checked.Compare(a.Checked))
	})
	return out, nil
}

// countManifests is the length of an index's manifests list, 0 when it
// does not parse.
func countManifests(body []byte) int {
	var idx struct {
		Manifests []struct{} `json:"manifests"`
	}
	if json.Unmarshal(body, &idx) != nil {
		return 0
	}
	return len(idx.Manifests)
}

// DeleteReferrers removes the referrers records of every subject drop
// says to, in any repository, and returns how many there were. The
// removal is durable when DeleteReferrers returns.
func (s *Store) DeleteReferrers(drop func(subject digest.Digest) bool) (int, error) {
	if err := s.beginTagOp(true); err != nil {
		return 0, fmt.Errorf("cache: delete referrers: %w", err)
	}
	defer s.ops.Done()
	var keys [][]byte
	err := s.referrers.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(referrersKeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().KeyCopy(nil)
			if _, subject, ok := parseReferrersKey(string(key)); !ok || drop(subject) {
				keys = append(keys, key)
			}
		}
		return nil
	})
	if err == nil {
		err = writeIndexKeys(s.referrers.db, nil, keys)
	}
	if err != nil {
		return 0, fmt.Errorf("cache: delete referrers: %w", err)
	}
	return len(keys), nil
}

// encodeReferrersRecord encodes rec, with k's filter and page, as a
// version 1 referrers record (layout in doc.go).
func encodeReferrersRecord(k ReferrersKey, rec ReferrersRecord) []byte {
	fields := []string{k.ArtifactType, k.Page, rec.FiltersApplied, rec.NextQuery}
	n := referrersRecordHeaderLen + len(rec.Body)
	for _, f := range fields {
		n += len(f)
	}
	b := make([]byte, referrersRecordHeaderLen, n)
	b[0] = referrersRecordVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(rec.Checked.UnixNano()))
	if rec.Fallback {
		b[9] = 1
	}
	for i, f := range fields {
		binary.BigEndian.PutUint16(b[10+2*i:], uint16(len(f))) // each at most maxReferrersField
	}
	for _, f := range fields {
		b = append(b, f...)
	}
	return append(b, rec.Body...)
}

// referrersChecked reads only the time of a referrers record.
func referrersChecked(b []byte) (int64, error) {
	if len(b) < referrersRecordHeaderLen {
		return 0, fmt.Errorf("referrers record of %d bytes is shorter than its %d-byte header", len(b), referrersRecordHeaderLen)
	}
	if b[0] != referrersRecordVersion {
		return 0, fmt.Errorf("referrers record version %d is not supported (want %d)", b[0], referrersRecordVersion)
	}
	return int64(binary.BigEndian.Uint64(b[1:9])), nil
}

// decodeReferrersRecord parses a record written by
// encodeReferrersRecord; the key's Repo and Subject are left empty.
func decodeReferrersRecord(b []byte) (ReferrersKey, ReferrersRecord, error) {
	checked, err := referrersChecked(b)
	if err != nil {
		return ReferrersKey{}, ReferrersRecord{}, err
	}
	var fields [4]string
	at := referrersRecordHeaderLen
	for i := range fields {
		n := int(binary.BigEndian.Uint16(b[10+2*i:]))
		if len(b) < at+n {
			return ReferrersKey{}, ReferrersRecord{}, fmt.Errorf("referrers record of %d bytes is too short for its fields", len(b))
		}
		fields[i] = string(b[at : at+n])
		at += n
	}
	k := ReferrersKey{ArtifactType: fields[0], Page: fields[1]}
	rec := ReferrersRecord{Body: slices.Clone(b[at:]), FiltersApplied: fields[2], NextQuery: fields[3],
		Fallback: b[9]&1 != 0, Checked: time.Unix(0, checked)}
	return k, rec, nil
}
