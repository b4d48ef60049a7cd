package ocilayout

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// FuzzRead feeds arbitrary bytes to Read: it must never panic, and what
// it accepts must be consistent.
func FuzzRead(f *testing.F) {
	m := newMinimal(f)
	valid := buildTar(f, m.entries()...)
	fx := newMinimal(f)
	fx.manifest = indexJSON(f, "", descOf(oci.MediaTypeDockerManifest, m.manifest), descOf(oci.MediaTypeImageManifest, []byte("absent")))
	seeds := [][]byte{
		valid,
		gzipBytes(f, valid),
		valid[:len(valid)-1024],
		buildTar(f, append(m.entries(), entry{name: "blobs/sha256/" + digest.FromString("x").Encoded(), typ: tar.TypeSymlink, link: "../x"})...),
		buildTar(f, fx.entries()...),
		buildTar(f, entry{name: "index.json", body: []byte(`{"schemaVersion":2,"manifests":[]}`)}),
		nil,
		{0x1f, 0x8b},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		seen := map[digest.Digest]int{}
		l, err := Read(bytes.NewReader(data), func(b Blob) error {
			seen[b.Digest]++
			n, err := io.Copy(io.Discard, b.Body)
			if err == nil && n != b.Size {
				t.Errorf("blob %s: read %d bytes, Size %d", b.Digest, n, b.Size)
			}
			return err
		})
		if err != nil {
			if l != nil {
				t.Errorf("Read returned a Layout with error %v", err)
			}
			var de *DigestError
			if errors.As(err, &de) && !errors.Is(err, ErrDigestMismatch) {
				t.Errorf("DigestError %v does not match ErrDigestMismatch", err)
			}
			return
		}
		for dgst, n := range seen {
			if n != 1 {
				t.Errorf("fn called %d times for %s", n, dgst)
			}
			if _, ok := l.Blobs[dgst]; !ok {
				t.Errorf("blob %s handed to fn but not in Blobs", dgst)
			}
		}
		missing := l.Missing()
		if !slices.IsSorted(missing) || len(slices.Compact(slices.Clone(missing))) != len(missing) {
			t.Errorf("Missing() = %v, not sorted and unique", missing)
		}
		for _, dgst := range missing {
			if _, ok := l.Blobs[dgst]; ok {
				t.Errorf("Missing() lists %s, which is in the archive", dgst)
			}
		}
		for _, d := range l.Index {
			_ = l.Refs(d.Digest)
		}
	})
}
