package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// Modes of what the store writes: owner only. The index tells which
// repositories and tags exist, and blobs are private images.
const (
	dirMode  fs.FileMode = 0o700
	fileMode fs.FileMode = 0o600
)

// storeDirs are the directories of a store's Dir that it owns whole.
func storeDirs() []string { return []string{blobsDirName, tmpDirName, indexDirName} }

// fixModes makes the store's own directories under dir owner-only: dir
// itself and subs (storeDirs(), or some of them) with everything in them, each
// directory 0700 and each regular file 0600. That upgrades a directory
// written by an older version (0755 and 0644), and the files Badger
// creates with 0666 less the umask. It never follows a symbolic link:
// links, and anything that is neither a directory nor a regular file,
// are left alone, and so are entries owned by another user (a volume's
// root, say), with a warning. Other entries of dir (the admin socket, a
// volume's lost+found) are not visited. A directory is fixed before what
// it holds. Entries that vanish meanwhile are no error.
func fixModes(dir string, subs []string, log *slog.Logger) error {
	m := modeFixer{uid: uint32(os.Geteuid())}
	if err := m.visit(dir, true); err != nil {
		return err
	}
	for _, sub := range subs {
		if err := filepath.WalkDir(filepath.Join(dir, sub), m.walk); err != nil {
			return err
		}
	}
	if len(m.skipped) > 0 {
		log.Warn("cache: entries owned by another user keep their modes", "count", len(m.skipped), "first", m.skipped[0])
	}
	return nil
}

// modeFixer is one fixModes pass.
type modeFixer struct {
	uid     uint32
	skipped []string // owned by another user
}

// walk is the fs.WalkDirFunc of a fixModes pass.
func (m *modeFixer) walk(path string, d fs.DirEntry, err error) error {
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if errors.Is(err, fs.ErrPermission) && d != nil {
			m.skipped = append(m.skipped, path) // a foreign directory we cannot read
			return fs.SkipDir
		}
		return err
	}
	if !d.IsDir() && !d.Type().IsRegular() {
		return nil // a symlink, socket, ...: never touched
	}
	return m.visit(path, d.IsDir())
}

// visit makes path, known by lstat to be a directory (dir) or a regular
// file, owner-only if it is ours.
func (m *modeFixer) visit(path string, dir bool) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cache: making %s owner-only: %w", path, err)
	}
	want := fileMode
	if dir {
		want = dirMode
	}
	if info.IsDir() != dir || !dir && !info.Mode().IsRegular() {
		return nil // changed since the walk looked
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid != m.uid {
		m.skipped = append(m.skipped, path)
		return nil
	}
	if info.Mode().Perm() == want {
		return nil
	}
	if err := chmodNoFollow(path, info.Mode().Type(), want); err != nil {
		return fmt.Errorf("cache: making %s owner-only: %w", path, err)
	}
	return nil
}

// chmodNoFollow sets path's permission bits to perm if it is still of
// type typ (a directory or a regular file): it opens path without
// following a symlink and changes the open file, so a link swapped in
// after the walk looked is never followed. An entry the owner may not
// open (mode 0000, say) is changed by path after another lstat.
func chmodNoFollow(path string, typ, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ELOOP):
		return nil // gone, or now a symlink
	case errors.Is(err, fs.ErrPermission):
		fi, lerr := os.Lstat(path)
		if lerr != nil || fi.Mode().Type() != typ {
			return nil
		}
		return os.Chmod(path, perm)
	case err != nil:
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode().Type() != typ {
		return nil // swapped for something else since the walk
	}
	return f.Chmod(perm)
}
