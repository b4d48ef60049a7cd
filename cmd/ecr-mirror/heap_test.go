package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

// heapUse is what one transfer cost in memory.
type heapUse struct {
	allocated  uint64 // bytes allocated during the transfer, by the whole process
	peakGrowth int64  // highest live heap seen during it, over the heap before it
}

// measureHeap runs f while sampling the heap.
func measureHeap(f func()) heapUse {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base := int64(sample[0].Value.Uint64())
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	var peak int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			peak = max(peak, int64(s[0].Value.Uint64())-base)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	wg.Wait()
	runtime.ReadMemStats(&after)
	return heapUse{allocated: after.TotalAlloc - before.TotalAlloc, peakGrowth: peak}
}

// Fetching (a cold miss) and then serving (a warm hit) a 1 GiB blob must
// cost no more memory than a 64 MiB one: everything streams.
func TestHeapDoesNotGrowWithBlobSize(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GiB through the mirror; skipped with -short")
	}
	if raceEnabled {
		// net/http takes a copy buffer from a sync.Pool for every
		// sendfile call; under -race the pool drops them at random.
		t.Skip("allocation counts are meaningless under -race; .ci/run runs this test without it")
	}
	fake := fakeecr.Start(t, fakeecr.Options{RequestLogSize: -1})
	m := startMirror(t, fake, mirrorOpts{maxSize: "2g"})
	use := map[int]heapUse{}
	for _, size := range []int{64 << 20, 1 << 30} {
		data := bytes.Repeat(testkit.RandomBytes(uint64(size), 1<<20), size>>20)
		dgst := fake.PutBlob("heap/blob", data)
		use[size] = measureHeap(func() {
			if err := fetchBlob(t, m, "heap/blob", dgst); err != nil {
				t.Fatal(err)
			}
			testwait.Until(t, "blob stored", func() bool { return m.stored(dgst) })
			if err := fetchBlob(t, m, "heap/blob", dgst); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("%4d MiB miss+hit: %.1f MiB allocated, live heap peak +%.1f MiB",
			size>>20, float64(use[size].allocated)/(1<<20), float64(use[size].peakGrowth)/(1<<20))
	}
	small, big := use[64<<20], use[1<<30]
	// 16x the bytes; allow noise from background work, not growth with size.
	if big.allocated > 2*small.allocated+8<<20 {
		t.Errorf("1 GiB allocated %d bytes vs %d for 64 MiB: allocation grows with blob size", big.allocated, small.allocated)
	}
	if big.peakGrowth > 2*small.peakGrowth+32<<20 {
		t.Errorf("1 GiB grew the live heap by %d bytes vs %d for 64 MiB", big.peakGrowth, small.peakGrowth)
	}
}

// patternReader is size bytes of a repeated block, read at any offset
// without holding more than the block: a blob file the test need not
// keep in memory.
type patternReader struct {
	block []byte
	size  int64
}

func (r patternReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < r.size {
		c := copy(p[n:min(len(p), n+int(r.size-off))], r.block[off%int64(len(r.block)):])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Writing a blob to the shared tier (multipart, each part read from the
// file as it is sent) and reading it back costs no more live heap for
// 256 MiB than for 32 MiB: nothing holds a whole blob or part list of
// buffers.
func TestHeapDoesNotGrowWithSharedStoreBlobSize(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; .ci/run runs this test without it")
	}
	tier := startSharedTier(t)
	st, err := sharedstore.New(sharedstore.Options{Bucket: tier.bucket, Prefix: tier.prefix, PathStyle: true, AWS: tier.srv.AWS(), PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	use := map[int64]heapUse{}
	for _, size := range []int64{32 << 20, 256 << 20} {
		r := patternReader{block: testkit.RandomBytes(uint64(size), 1<<20+7), size: size}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
			t.Fatal(err)
		}
		dgst := digest.NewDigest(digest.SHA256, h)
		use[size] = measureHeap(func() {
			if err := st.Put(ctx, dgst, size, "", r); err != nil {
				t.Fatal(err)
			}
			obj, err := st.Open(ctx, dgst)
			if err != nil {
				t.Fatal(err)
			}
			defer obj.Body.Close()
			v := dgst.Verifier()
			if n, err := io.Copy(v, obj.Body); err != nil || n != size || !v.Verified() {
				t.Fatalf("read back %d of %d bytes (%v), verified %v", n, size, err, v.Verified())
			}
		})
		t.Logf("%4d MiB put+get: %.1f MiB allocated, live heap peak +%.1f MiB",
			size>>20, float64(use[size].allocated)/(1<<20), float64(use[size].peakGrowth)/(1<<20))
	}
	small, big := use[32<<20], use[256<<20]
	if big.peakGrowth > 2*small.peakGrowth+16<<20 {
		t.Errorf("256 MiB grew the live heap by %d bytes vs %d for 32 MiB", big.peakGrowth, small.peakGrowth)
	}
}
