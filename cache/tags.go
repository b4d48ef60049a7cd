package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// tagKeyPrefix starts the Badger key of every tag record (layout in doc.go).
const tagKeyPrefix = "tag/"

const (
	tagRecordVersion   = 1
	tagRecordHeaderLen = 1 + 8 + 8 + 1
)

// TagRecord is the last answer upstream gave for a tag asked with one
// Accept header: the manifest it named and when.
type TagRecord struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	// Checked is when upstream gave this answer.
	Checked time.Time
}

// PutTag records rec as the answer for repo:tag asked with accept (an
// Accept header value; equivalent values share a record, see
// normalizeAccept). It replaces the previous record.
//
// Tag records are advisory, so PutTag does not wait for the write: it is
// visible to GetTag at once and durable after Close. A write that fails
// later is logged.
func (s *Store) PutTag(repo, tag, accept string, rec TagRecord) error {
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
	if err := s.beginTagOp(); err != nil {
		return fmt.Errorf("cache: put tag %s:%s: %w", repo, tag, err)
	}
	txn := s.db.NewTransaction(true)
	if err := txn.Set(key, encodeTagRecord(rec)); err != nil {
		txn.Discard()
		s.ops.Done()
		return fmt.Errorf("cache: put tag %s:%s: %w", repo, tag, err)
	}
	// Close waits for s.ops, so the write lands before the index closes.
	txn.CommitWith(func(err error) {
		defer s.ops.Done()
		if err != nil {
			s.log.Warn("cache: record tag", "repository", repo, "tag", tag, "error", err)
		}
	})
	return nil
}

// GetTag returns the record of repo:tag asked with accept, or an error
// wrapping ErrNotFound when there is none.
func (s *Store) GetTag(repo, tag, accept string) (TagRecord, error) {
	key, err := tagKey(repo, tag, accept)
	if err != nil {
		return TagRecord{}, err
	}
	if err := s.beginTagOp(); err != nil {
		return TagRecord{}, fmt.Errorf("cache: get tag %s:%s: %w", repo, tag, err)
	}
	defer s.ops.Done()
	var rec TagRecord
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			rec, err = decodeTagRecord(v)
			return err
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return TagRecord{}, fmt.Errorf("cache: get tag %s:%s: %w", repo, tag, ErrNotFound)
	}
	if err != nil {
		return TagRecord{}, fmt.Errorf("cache: get tag %s:%s: %w", repo, tag, err)
	}
	return rec, nil
}

// beginTagOp registers an index operation that Close waits for, unless the
// store is closed; the caller ends it with s.ops.Done.
func (s *Store) beginTagOp() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.ops.Add(1)
	return nil
}

// tagKey is tag/<repo>/<tag>/<hex sha256 of the normalised accept>. A tag
// never contains "/", so the key is unambiguous however many components
// the repository name has.
func tagKey(repo, tag, accept string) ([]byte, error) {
	if repo == "" || tag == "" || strings.Contains(tag, "/") {
		return nil, fmt.Errorf("cache: invalid tag reference %q:%q", repo, tag)
	}
	sum := sha256.Sum256([]byte(normalizeAccept(accept)))
	return []byte(tagKeyPrefix + repo + "/" + tag + "/" + hex.EncodeToString(sum[:])), nil
}

// normalizeAccept reduces an Accept header value to its media types,
// without parameters, lowercased, sorted and deduplicated, joined by
// commas: values that ask for the same types map to the same record.
func normalizeAccept(accept string) string {
	var types []string
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, _ := strings.Cut(part, ";")
		if mt = strings.ToLower(strings.TrimSpace(mt)); mt != "" {
			types = append(types, mt)
		}
	}
	slices.Sort(types)
	return strings.Join(slices.Compact(types), ",")
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
