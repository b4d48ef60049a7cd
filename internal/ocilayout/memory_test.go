package ocilayout

import (
	"bytes"
	"crypto/sha256"
	"io"
	"runtime"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// TestStreamingMemory writes and reads a 32 MiB blob from a generator and
// checks that neither holds it in memory. It is not parallel: TotalAlloc
// counts the allocations of every goroutine.
func TestStreamingMemory(t *testing.T) {
	const size = 32 << 20  // four times the budget
	const budget = 8 << 20 // well below the blob size
	h := sha256.New()
	if _, err := io.Copy(h, newGen(size, 11)); err != nil {
		t.Fatal(err)
	}
	dgst := sha256Digest(h.Sum(nil))
	config := []byte(`{"os":"linux"}`)
	manifest := manifestJSON(t, oci.MediaTypeImageManifest, descOf(configType, config), oci.Descriptor{MediaType: layerType, Digest: dgst, Size: size})

	// writeArchive streams the archive into w.
	writeArchive := func(w io.Writer) error {
		lw := NewWriter(w)
		for _, b := range [][]byte{config, manifest} {
			if err := lw.AddBlob(digest.FromBytes(b), int64(len(b)), bytes.NewReader(b)); err != nil {
				return err
			}
		}
		if err := lw.AddBlob(dgst, size, newGen(size, 11)); err != nil {
			return err
		}
		lw.AddImage(descOf(oci.MediaTypeImageManifest, manifest), map[string]string{AnnotationRefName: "big"})
		return lw.Close()
	}
	// readArchive reads the archive as writeArchive streams it, reading
	// the large blob's body when readBody is set.
	readArchive := func(t *testing.T, readBody bool) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeArchive(pw)) }()
		var n int64
		l, err := Read(pr, func(b Blob) error {
			if b.Digest != dgst || !readBody {
				return nil
			}
			var err error
			n, err = io.Copy(io.Discard, b.Body)
			return err
		})
		pr.CloseWithError(err)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if readBody && n != size {
			t.Errorf("read %d bytes of the blob, want %d", n, size)
		}
		if l.Blobs[dgst] != size || len(l.Missing()) != 0 {
			t.Errorf("Blobs[%s] = %d, Missing() = %v", dgst, l.Blobs[dgst], l.Missing())
		}
	}

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"write", func(t *testing.T) {
			if err := writeArchive(io.Discard); err != nil {
				t.Fatal(err)
			}
		}},
		{"read", func(t *testing.T) { readArchive(t, true) }},
		{"read, body left to drain", func(t *testing.T) { readArchive(t, false) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			tt.run(t)
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > budget {
				t.Errorf("allocated %d bytes for a %d-byte blob, want at most %d", grew, size, budget)
			} else {
				t.Logf("allocated %d bytes", grew)
			}
		})
	}
}
