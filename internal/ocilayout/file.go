package ocilayout

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes the archive fill adds to a Writer as the file path,
// complete or not at all: it goes to a temp file beside path, which is
// synced and renamed into place only when fill and Close succeed, and
// removed otherwise. It returns the archive's size in bytes.
func WriteFile(path string, fill func(aw *Writer) error) (size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return 0, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	buf := bufio.NewWriterSize(tmp, 1<<20)
	counted := &countingWriter{w: buf}
	aw := NewWriter(counted)
	if err := fill(aw); err != nil {
		return 0, err
	}
	if err := aw.Close(); err != nil {
		return 0, err
	}
	if err := buf.Flush(); err != nil {
		return 0, err
	}
	if err := tmp.Sync(); err != nil {
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, err
	}
	tmp = nil
	return counted.n, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
