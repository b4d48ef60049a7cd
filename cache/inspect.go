package cache

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/opencontainers/go-digest"
)

// ErrLocked is returned by CheckUnlocked when another Store, usually the
// running mirror, holds the directory. Check it with errors.Is.
var ErrLocked = errors.New("cache: directory in use by another store")

// CheckUnlocked reports whether a Store could open dir now: it returns an
// error wrapping ErrLocked if another Store (in this process or another)
// holds its index, and nil if dir has no index yet. It takes the same
// non-blocking flock Badger takes and releases it at once, so it is a
// hint for a clear message, not a reservation: Open still fails fast if
// the lock is taken in between.
func CheckUnlocked(dir string) error {
	d, err := os.Open(filepath.Join(dir, indexDirName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cache: check lock of %s: %w", dir, err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("cache: %s: %w", dir, ErrLocked)
		}
		return fmt.Errorf("cache: check lock of %s: %w", dir, err)
	}
	return syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
}

// Entries returns the Info of every stored entry, sorted by digest. It
// changes no entry's recency.
func (s *Store) Entries() ([]Info, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: entries: %w", ErrClosed)
	}
	out := s.g.infos()
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int { return cmp.Compare(a.Digest, b.Digest) })
	return out, nil
}

// Verify rehashes the stored file of dgst. It returns nil if the file has
// the indexed size and hashes to dgst, an error wrapping ErrSizeMismatch
// or ErrDigestMismatch if not (or wrapping the read error, such as a file
// gone missing), and ErrNotFound if dgst is not stored. Like Stat, it
// changes no recency. A damaged entry stays stored: Delete removes it.
func (s *Store) Verify(dgst digest.Digest) error {
	info, err := s.Stat(dgst)
	if err != nil {
		return err
	}
	// Read the file directly rather than through Get, which would count
	// a hit and refresh the image.
	f, err := os.Open(s.blobPath(dgst))
	if err != nil {
		return fmt.Errorf("cache: verify %s: %w", dgst, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("cache: verify %s: after %d bytes: %w", dgst, n, err)
	}
	if n != info.Size {
		return fmt.Errorf("cache: verify %s: file has %d bytes, index says %d: %w", dgst, n, info.Size, ErrSizeMismatch)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != dgst.Encoded() {
		return fmt.Errorf("cache: verify %s: content hashes to sha256:%s: %w", dgst, got, ErrDigestMismatch)
	}
	return nil
}
