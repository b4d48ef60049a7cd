package ocilayout

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

func TestWriterErrors(t *testing.T) {
	t.Parallel()
	data := []byte("some layer content")
	dgst := digest.FromBytes(data)
	other := digest.FromString("something else")
	size := int64(len(data))
	add := func(w *Writer) {
		if err := w.AddBlob(dgst, size, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		// run returns the error under test.
		run func(w *Writer) error
		// target, if set, must match the error; want are substrings of it.
		target error
		want   []string
		// unusable: the Writer must refuse everything afterwards.
		unusable bool
	}{
		{
			name:     "fewer bytes than size",
			run:      func(w *Writer) error { return w.AddBlob(dgst, size+10, bytes.NewReader(data)) },
			want:     []string{dgst.String(), "got 18 bytes, want 28"},
			unusable: true,
		},
		{
			name:     "more bytes than size",
			run:      func(w *Writer) error { return w.AddBlob(dgst, size-1, bytes.NewReader(data)) },
			want:     []string{dgst.String(), "more than 17 bytes"},
			unusable: true,
		},
		{
			name:     "wrong digest",
			run:      func(w *Writer) error { return w.AddBlob(other, size, bytes.NewReader(data)) },
			target:   ErrDigestMismatch,
			want:     []string{"blob " + other.String() + ": content hashes to " + dgst.String()},
			unusable: true,
		},
		{
			name: "reader error",
			run: func(w *Writer) error {
				return w.AddBlob(dgst, size, io.MultiReader(bytes.NewReader(data[:3]), errReader{}))
			},
			target:   errBoom,
			want:     []string{dgst.String()},
			unusable: true,
		},
		{
			name: "sha512 digest",
			run: func(w *Writer) error {
				return w.AddBlob(digest.SHA512.FromBytes(data), size, bytes.NewReader(data))
			},
			want: []string{digest.SHA512.FromBytes(data).String(), "only sha256"},
		},
		{
			name: "malformed digest",
			run:  func(w *Writer) error { return w.AddBlob("sha256:xyz", size, bytes.NewReader(data)) },
			want: []string{`"sha256:xyz"`},
		},
		{
			name: "negative size",
			run:  func(w *Writer) error { return w.AddBlob(dgst, -1, bytes.NewReader(data)) },
			want: []string{dgst.String(), "negative size"},
		},
		{
			name: "image names a blob never added",
			run: func(w *Writer) error {
				add(w)
				w.AddImage(oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: other, Size: 3}, nil)
				return w.Close()
			},
			want:     []string{other.String(), "never added"},
			unusable: true,
		},
		{
			name: "image with the wrong size",
			run: func(w *Writer) error {
				add(w)
				w.AddImage(oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: dgst, Size: size + 1}, nil)
				return w.Close()
			},
			want:     []string{dgst.String(), "size 19"},
			unusable: true,
		},
		{
			name: "image without media type",
			run: func(w *Writer) error {
				add(w)
				w.AddImage(oci.Descriptor{Digest: dgst, Size: size}, nil)
				return w.Close()
			},
			want:     []string{dgst.String(), "no media type"},
			unusable: true,
		},
		{
			name: "docker manifest names a layer never added",
			run: func(w *Writer) error {
				add(w)
				w.AddDockerManifest(dgst, []digest.Digest{dgst, other}, []string{"a:b"})
				return w.Close()
			},
			want:     []string{other.String(), "manifest.json", "never added"},
			unusable: true,
		},
		{
			name: "closed twice",
			run: func(w *Writer) error {
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				return w.Close()
			},
			want: []string{"already closed"},
		},
		{
			name: "add after close",
			run: func(w *Writer) error {
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				return w.AddBlob(dgst, size, bytes.NewReader(data))
			},
			want: []string{dgst.String(), "closed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := NewWriter(io.Discard)
			err := tt.run(w)
			if err == nil {
				t.Fatal("got no error")
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Errorf("error %q does not match %q", err, tt.target)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if tt.unusable {
				if err2 := w.AddBlob(other, 0, strings.NewReader("")); err2 == nil {
					t.Error("AddBlob after the failure succeeded")
				}
				if err2 := w.Close(); err2 == nil {
					t.Error("Close after the failure succeeded")
				}
			}
		})
	}
}

var errBoom = errors.New("boom")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBoom }

// TestWriterDigestError checks the error type of a mismatch.
func TestWriterDigestError(t *testing.T) {
	t.Parallel()
	want := digest.FromString("a")
	err := NewWriter(io.Discard).AddBlob(want, 1, strings.NewReader("b"))
	var de *DigestError
	if !errors.As(err, &de) || de.Digest != want || de.Got != digest.FromString("b") {
		t.Fatalf("AddBlob = %v, want a *DigestError for %s", err, want)
	}
}

// TestWriterPropagatesWriteErrors checks that a failing destination fails
// the Writer.
func TestWriterPropagatesWriteErrors(t *testing.T) {
	t.Parallel()
	data := []byte("x")
	err := NewWriter(failWriter{}).AddBlob(digest.FromBytes(data), 1, bytes.NewReader(data))
	if !errors.Is(err, errBoom) {
		t.Fatalf("AddBlob = %v, want %v", err, errBoom)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errBoom }
