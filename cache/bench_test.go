package cache

import (
	"testing"
)

// BenchmarkWriterCommit measures Create, Write in 32 KiB chunks (what
// io.Copy uses) and Commit of a 64 MiB entry: hashing, the temp file write,
// fsync, rename and the synced index write.
func BenchmarkWriterCommit(b *testing.B) {
	const size = 64 << 20
	data, dgst := blob(1000, size)
	s := openStore(b, b.TempDir(), 2*size)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		w, err := s.Create(dgst, size, "application/octet-stream")
		if err != nil {
			b.Fatal(err)
		}
		if err := writeChunks(w, data, 32<<10, 0); err != nil {
			b.Fatal(err)
		}
		if kept, err := w.Commit(); !kept || err != nil {
			b.Fatalf("Commit = %v, %v", kept, err)
		}
		b.StopTimer()
		if err := s.Delete(dgst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
