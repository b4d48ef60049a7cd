package cache

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// pinKeyPrefix starts the Badger key of every pin record (layout in doc.go).
const pinKeyPrefix = "pin/"

const (
	pinRecordVersion   = 1
	pinRecordHeaderLen = 1 + 8 + 2
	// maxPinNameLen and maxPinNames bound a pin's names: a repository and
	// tag are well under 512 bytes, and an image is rarely known by more
	// than a few names.
	maxPinNameLen = 512
	maxPinNames   = 256
	// maxListed is how many missing digests an ErrIncomplete error names.
	maxListed = 5
)

// PinInfo describes one pin (Store.Pins).
type PinInfo struct {
	// Digest is the pinned image: a manifest or an index.
	Digest digest.Digest
	// Names are the labels given to Pin, sorted; there may be none.
	Names []string
	// Bytes is the size of the image as stored now: its root and what it
	// references, transitively, each entry once. Content also pinned by
	// another pin counts in both.
	Bytes int64
	// Pinned is when the image was first pinned.
	Pinned time.Time
}

// pinRecord is one pin as kept in memory and in its pin/ record.
type pinRecord struct {
	names  []string // sorted, without duplicates
	pinned int64    // unix nanoseconds of the first Pin
}

// Pin keeps the image rooted at dgst, a manifest or an index, from ever
// being evicted: dgst and everything it references, transitively. name
// is a free-form label such as "team/app:v1"; it may be empty, and
// pinning an image again adds the name (a pin has several names, each
// once). The pin is durable and survives restarts.
//
// The image must be whole: dgst and every digest it references,
// transitively, stored; otherwise Pin returns an error wrapping
// ErrIncomplete that names the missing digests (and ErrNotFound if dgst
// itself is missing). Pinned content counts against MaxSize, and Pin
// refuses with an error wrapping ErrPinTooLarge when all pinned content
// together, each entry once, would exceed it. The check and the record
// are made under the store's lock, so nothing is evicted in between.
//
// Content of a pinned image that is removed later (Delete) and fetched
// again is pinned as it lands. Any stored entry can be pinned; a blob
// pins itself alone.
func (s *Store) Pin(dgst digest.Digest, name string) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	if len(name) > maxPinNameLen {
		return fmt.Errorf("cache: pin %s: name of %d bytes exceeds %d", dgst, len(name), maxPinNameLen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.changeErrLocked(); err != nil {
		return fmt.Errorf("cache: pin %s: %w", dgst, err)
	}
	if !s.g.has(dgst) {
		return fmt.Errorf("cache: pin %s: %w: it is not stored (%w)", dgst, ErrIncomplete, ErrNotFound)
	}
	add, missing := s.g.pinCost(dgst)
	if len(missing) > 0 {
		return fmt.Errorf("cache: pin %s: %w: %s", dgst, ErrIncomplete, describeMissing(missing))
	}
	if pinned := s.g.pinnedBytes; add > 0 && pinned+add > s.maxSize {
		return fmt.Errorf("cache: pin %s: %w: %d bytes already pinned and %d more for this image make %d, over MaxSize %d",
			dgst, ErrPinTooLarge, pinned, add, pinned+add, s.maxSize)
	}
	old := s.g.pins[dgst]
	rec := &pinRecord{pinned: time.Now().UnixNano()}
	if old != nil {
		rec.pinned, rec.names = old.pinned, slices.Clone(old.names)
	}
	if name != "" && !slices.Contains(rec.names, name) {
		if len(rec.names) >= maxPinNames {
			return fmt.Errorf("cache: pin %s: already has %d names, the most a pin can have", dgst, len(rec.names))
		}
		rec.names = append(rec.names, name)
		slices.Sort(rec.names)
	}
	if old == nil || len(rec.names) != len(old.names) {
		// A synced write under s.mu: Pin is a rare operator action, and
		// the image must not be evicted between the check and the record.
		err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(pinKey(dgst), encodePin(rec)) })
		if err != nil {
			return fmt.Errorf("cache: pin %s: write pin record: %w", dgst, err)
		}
	}
	s.g.pin(dgst, rec)
	s.syncSizeLocked()
	return nil
}

// Unpin removes the pin of dgst, with all its names; the image becomes
// evictable again, as the most recently used one (unless another pin
// still holds its content). It returns an error wrapping ErrNotFound if
// dgst is not pinned.
func (s *Store) Unpin(dgst digest.Digest) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.changeErrLocked(); err != nil {
		return fmt.Errorf("cache: unpin %s: %w", dgst, err)
	}
	if !s.g.isPinRoot(dgst) {
		return fmt.Errorf("cache: unpin %s: not pinned: %w", dgst, ErrNotFound)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(pinKey(dgst)) }); err != nil {
		return fmt.Errorf("cache: unpin %s: delete pin record: %w", dgst, err)
	}
	s.g.unpin(dgst)
	s.syncSizeLocked()
	return nil
}

// Pins returns every pin, sorted by digest, including pins of images
// that are no longer whole (content removed by Delete).
func (s *Store) Pins() ([]PinInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("cache: pins: %w", ErrClosed)
	}
	out := make([]PinInfo, 0, len(s.g.pins))
	for d, p := range s.g.pins {
		out = append(out, PinInfo{Digest: d, Names: slices.Clone(p.names), Bytes: s.g.imageBytes(d), Pinned: time.Unix(0, p.pinned)})
	}
	slices.SortFunc(out, func(a, b PinInfo) int { return cmp.Compare(a.Digest, b.Digest) })
	return out, nil
}

// describeMissing says which digests an image lacks, naming a few.
func describeMissing(missing []digest.Digest) string {
	listed := make([]string, 0, maxListed)
	for _, d := range missing[:min(len(missing), maxListed)] {
		listed = append(listed, d.String())
	}
	msg := fmt.Sprintf("%d referenced digests are not stored: %s", len(missing), strings.Join(listed, ", "))
	if more := len(missing) - len(listed); more > 0 {
		msg += fmt.Sprintf(" and %d more", more)
	}
	return msg
}

func pinKey(dgst digest.Digest) []byte {
	return []byte(pinKeyPrefix + dgst.String())
}

// encodePin encodes p as a version 1 pin record (layout in doc.go).
func encodePin(p *pinRecord) []byte {
	n := pinRecordHeaderLen
	for _, name := range p.names {
		n += 2 + len(name)
	}
	b := make([]byte, pinRecordHeaderLen, n)
	b[0] = pinRecordVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(p.pinned))
	binary.BigEndian.PutUint16(b[9:11], uint16(len(p.names))) // at most maxPinNames
	for _, name := range p.names {
		b = binary.BigEndian.AppendUint16(b, uint16(len(name))) // at most maxPinNameLen
		b = append(b, name...)
	}
	return b
}

// decodePin parses a record written by encodePin.
func decodePin(b []byte) (*pinRecord, error) {
	if len(b) < pinRecordHeaderLen {
		return nil, fmt.Errorf("pin record of %d bytes is shorter than its %d-byte header", len(b), pinRecordHeaderLen)
	}
	if b[0] != pinRecordVersion {
		return nil, fmt.Errorf("pin record version %d is not supported (want %d)", b[0], pinRecordVersion)
	}
	p := &pinRecord{pinned: int64(binary.BigEndian.Uint64(b[1:9]))}
	n := int(binary.BigEndian.Uint16(b[9:11]))
	rest := b[pinRecordHeaderLen:]
	for i := range n {
		if len(rest) < 2 {
			return nil, fmt.Errorf("pin record ends before name %d of %d", i+1, n)
		}
		l := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+l {
			return nil, fmt.Errorf("pin record ends inside name %d of %d (%d bytes)", i+1, n, l)
		}
		p.names = append(p.names, string(rest[2:2+l]))
		rest = rest[2+l:]
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("pin record has %d bytes after its %d names", len(rest), n)
	}
	slices.Sort(p.names)
	p.names = slices.Compact(p.names)
	return p, nil
}

// loadPins reads every pin/ record. Keys that do not name a valid sha256
// digest and values that do not decode are returned in bad.
func loadPins(db *badger.DB) (pins map[digest.Digest]*pinRecord, bad [][]byte, err error) {
	pins = make(map[digest.Digest]*pinRecord)
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(pinKeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := item.KeyCopy(nil)
			dgst := digest.Digest(strings.TrimPrefix(string(key), pinKeyPrefix))
			if checkDigest(dgst) != nil {
				bad = append(bad, key)
				continue
			}
			err := item.Value(func(val []byte) error {
				p, err := decodePin(val)
				if err != nil {
					bad = append(bad, key)
					return nil
				}
				pins[dgst] = p
				return nil
			})
			if err != nil {
				return fmt.Errorf("read value of %q: %w", key, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cache: load pins: %w", err)
	}
	return pins, bad, nil
}
