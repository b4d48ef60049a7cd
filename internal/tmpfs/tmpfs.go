// Package tmpfs gives tests a small filesystem of their own, to fill up:
// a real ENOSPC instead of an injected one.
package tmpfs

import (
	"errors"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size (as tmpfs's size= option takes it, e.g.
// "8m") on a new temp dir and unmounts it at cleanup, after everything
// registered later (such as a mirror using it) has stopped. It skips the
// test where mounting is not allowed.
func Mount(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("cannot mount a tmpfs (%v): this test needs root or CAP_SYS_ADMIN, as in CI", err)
		}
		t.Fatalf("mount a tmpfs of %s on %s: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
