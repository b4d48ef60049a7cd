package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
)

// openReadOnly opens the index of an existing store for reading and
// builds the store's view of it as Open does, changing nothing on disk.
func (s *Store) openReadOnly() error {
	index := filepath.Join(s.dir, indexDirName)
	if fi, err := os.Stat(index); err != nil || !fi.IsDir() {
		return fmt.Errorf("cache: open %s read-only: no store there (it has no %s/ directory)", s.dir, indexDirName)
	}
	db, err := openIndexReadOnly(index, s.log)
	if err != nil {
		return err
	}
	s.db = db
	s.tags = &tagStore{db: db, log: s.log}
	s.referrers = &referrersStore{db: db, log: s.log}
	if err := s.reconcile(); err != nil {
		return errors.Join(err, s.db.Close())
	}
	return nil
}

// changeErrLocked is the error of an operation that would change the
// store: ErrClosed or ErrReadOnly, or nil when it may go ahead.
func (s *Store) changeErrLocked() error {
	switch {
	case s.closed:
		return ErrClosed
	case s.readOnly:
		return ErrReadOnly
	}
	return nil
}

// checkStoreDirs refuses a store directory in which one of the
// directories the store creates and cleans (blobs/, blobs/sha256/, tmp/,
// index/) is a symbolic link or not a directory, or in which one of
// Badger's files in index/ is a link: through a link, Open would create, and reconcile or
// Badger delete or write, files outside dir. An absent directory is fine
// (Open creates it). dir itself may be a link, as a volume's mount path
// often is. Links further down (in tmp/, in blobs/sha256/) are removed
// as links by reconcile, never followed.
func checkStoreDirs(dir string) error {
	for _, sub := range []string{blobsDirName, filepath.Join(blobsDirName, string(digest.SHA256)), tmpDirName, indexDirName} {
		path := filepath.Join(dir, sub)
		fi, err := os.Lstat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return fmt.Errorf("cache: open %s: %w", dir, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			return fmt.Errorf("cache: open %s: %s is a symbolic link (to %s); the store never follows links inside its directory: replace it with a directory, or mount the volume at the cache directory itself", dir, path, target)
		case !fi.IsDir():
			return fmt.Errorf("cache: open %s: %s is not a directory (%s); move it away", dir, path, fi.Mode().Type())
		}
	}
	index := filepath.Join(dir, indexDirName)
	des, err := os.ReadDir(index)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cache: open %s: %w", dir, err)
	}
	for _, de := range des {
		if de.Type()&fs.ModeSymlink != 0 && isIndexFile(de.Name()) {
			return fmt.Errorf("cache: open %s: %s is a symbolic link; the index never writes through links: replace it with the file it points to", dir, filepath.Join(index, de.Name()))
		}
	}
	return nil
}

// isIndexFile reports whether name is one Badger opens, writes or
// deletes in its directory; it ignores every other name.
func isIndexFile(name string) bool {
	switch name {
	case "MANIFEST", "KEYREGISTRY", "DISCARD", "LOCK":
		return true
	}
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".vlog") || strings.HasSuffix(name, ".mem") ||
		strings.HasSuffix(name, "-REWRITE")
}
