package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
)

const (
	blobsDirName = "blobs"
	tmpDirName   = "tmp"
	indexDirName = "index"
)

// checkDigest accepts only valid sha256 digests; everything that builds a
// path or a key goes through it first.
func checkDigest(dgst digest.Digest) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("cache: invalid digest %q: %w", dgst, err)
	}
	if alg := dgst.Algorithm(); alg != digest.SHA256 {
		return fmt.Errorf("cache: digest %s: algorithm %q is not supported (only sha256)", dgst, alg)
	}
	return nil
}

// blobPath is where the committed file of a checked digest lives.
func (s *Store) blobPath(dgst digest.Digest) string {
	hex := dgst.Encoded()
	return filepath.Join(s.blobDir, hex[:2], hex)
}

// ensureDir creates dir if needed; when it creates it, it fsyncs the parent
// so that the new directory entry survives a crash.
func ensureDir(dir string) error {
	err := os.Mkdir(dir, dirMode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

// syncDir fsyncs a directory so renames and unlinks in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// removeFile unlinks path; a file that is already gone is not an error.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func timeFromNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// isHex reports whether s is non-empty lowercase hex.
func isHex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
