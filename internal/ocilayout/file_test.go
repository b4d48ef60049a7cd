package ocilayout

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// WriteFile leaves the archive whole at its path, or leaves the path as
// it was and no temp file beside it.
func TestWriteFileIsCompleteOrNothing(t *testing.T) {
	t.Parallel()
	m := newMinimal(t)
	addImage := func(aw *Writer) error {
		for _, b := range [][]byte{m.layer, m.config, m.manifest} {
			if err := aw.AddBlob(digest.FromBytes(b), int64(len(b)), bytes.NewReader(b)); err != nil {
				return err
			}
		}
		aw.AddImage(descOf(oci.MediaTypeImageManifest, m.manifest), map[string]string{AnnotationRefName: "v1"})
		return nil
	}
	boom := errors.New("boom")
	tests := []struct {
		name     string
		before   []byte // the file at path before; nil: none
		fill     func(aw *Writer) error
		wantErr  error // nil: written
		checkErr bool  // any error will do
	}{
		{name: "written", fill: addImage},
		{name: "replaces an older file", before: []byte("old"), fill: addImage},
		{name: "fill fails", fill: func(aw *Writer) error { addImage(aw); return boom }, wantErr: boom},
		{name: "fill fails, older file kept", before: []byte("old"), fill: func(*Writer) error { return boom }, wantErr: boom},
		{name: "close fails: a blob the image needs is missing", fill: func(aw *Writer) error {
			aw.AddImage(descOf(oci.MediaTypeImageManifest, m.manifest), nil)
			return nil
		}, checkErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "out.tar")
			if tt.before != nil {
				if err := os.WriteFile(path, tt.before, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			size, err := WriteFile(path, tt.fill)
			entries, _ := os.ReadDir(dir)
			if want := btoi(tt.before != nil || err == nil); len(entries) != want {
				t.Errorf("%d files left in the directory, want %d: %v", len(entries), want, entries)
			}
			got, _ := os.ReadFile(path)
			if tt.wantErr != nil || tt.checkErr {
				if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("WriteFile: %v, want %v", err, tt.wantErr)
				}
				if !bytes.Equal(got, tt.before) {
					t.Errorf("the file at path changed to %d bytes", len(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			if size != int64(len(got)) {
				t.Errorf("size %d, the file has %d bytes", size, len(got))
			}
			l, err := Read(bytes.NewReader(got), func(Blob) error { return nil })
			if err != nil {
				t.Fatalf("reading it back: %v", err)
			}
			if len(l.Index) != 1 || l.Index[0].Digest != digest.FromBytes(m.manifest) {
				t.Errorf("read back index %v, want the one manifest", l.Index)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
