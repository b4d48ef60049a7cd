package proxy

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// A range of an uncached blob passed through from upstream is read under
// the cap too, beside the download that fills the cache.
func TestRangeFromUpstreamThrottled(t *testing.T) {
	t.Parallel()
	const size, rate = 1 << 20, 1 << 20
	e := newEdgeEnv(t, edgeOptions{maxRate: rate})
	data := testkit.RandomBytes(53, size)
	dgst := e.fake.PutBlob("team/app", data)
	resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), http.Header{"Range": {"bytes=786432-"}})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[786432:]) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
	}
	e.proxy.Wait()
	st := e.proxy.Stats()
	if st.UpstreamRangeGet.Load() != 1 {
		t.Skipf("the range was served from the download (%d upstream ranges)", st.UpstreamRangeGet.Load())
	}
	if got, want := st.ThrottledBytes.Load(), int64(size+len(body)); got != want {
		t.Errorf("Stats.ThrottledBytes = %d, want %d (the download and the range)", got, want)
	}
}
