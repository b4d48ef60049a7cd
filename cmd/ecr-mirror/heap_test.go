package main

import (
	"bytes"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
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
