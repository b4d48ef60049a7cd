// Package dirtree describes a directory tree for tests that check a
// command left it alone: every entry's path, type, mode and content.
package dirtree

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Snapshot returns one line per entry under root, sorted by path
// relative to root: its type and permission bits, then the sha256 of a
// regular file's content or a symlink's target. Links are not followed.
// Paths for which skip returns true are left out, with what is under
// them; skip may be nil.
func Snapshot(root string, skip func(rel string) bool) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel != "." && skip != nil && skip(rel) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		what := ""
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			what = fmt.Sprintf("%d bytes sha256:%s", len(b), hex.EncodeToString(sum[:]))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			what = "-> " + target
		}
		out = append(out, strings.TrimSpace(fmt.Sprintf("%s %v %s", rel, fi.Mode(), what)))
		return nil
	})
	slices.Sort(out)
	return out, err
}

// Diff lists the lines only in before (prefixed "-") and only in after
// ("+"); it is empty when both are equal.
func Diff(before, after []string) []string {
	var out []string
	for _, l := range before {
		if !slices.Contains(after, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range after {
		if !slices.Contains(before, l) {
			out = append(out, "+ "+l)
		}
	}
	return out
}
