package fakeecr

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// presignedURL puts data in repo "r" and returns the S3 URL the registry
// redirects its GET to.
func presignedURL(t *testing.T, f *Server, c *http.Client, data []byte) (string, digest.Digest) {
	t.Helper()
	dgst := f.PutBlob("r", data)
	r := do(t, c, http.MethodGet, f.URL()+"/v2/r/blobs/"+dgst.String(), "Authorization: Basic "+token(t, f))
	if r.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("blob GET: %d %s", r.StatusCode, r.body)
	}
	return r.Header.Get("Location"), dgst
}

func TestS3Rejects(t *testing.T) {
	t.Parallel()
	clk := newClock()
	f := Start(t, Options{Now: clk.Now, PresignTTL: time.Minute})
	c := newClient(t)
	loc, _ := presignedURL(t, f, c, []byte("some layer"))
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}

	// Any Authorization header, even with a valid presigned URL.
	for _, auth := range []string{"Basic " + token(t, f), "Bearer x", sigV4} {
		r := do(t, c, http.MethodGet, loc, "Authorization: "+auth)
		if msg := wantS3Error(t, r, http.StatusBadRequest, "InvalidArgument"); msg != msgOneAuth {
			t.Errorf("InvalidArgument message %q", msg)
		}
	}

	tamper := func(param, value string) string {
		q := u.Query()
		q.Set(param, value)
		v := *u
		v.RawQuery = q.Encode()
		return v.String()
	}
	sig := u.Query().Get("X-Amz-Signature")
	flipped := sig[:len(sig)-1] + "0"
	if strings.HasSuffix(sig, "0") {
		flipped = sig[:len(sig)-1] + "1"
	}
	for _, tc := range []struct {
		name, url string
		status    int
		code      string
	}{
		{"tampered signature", tamper("X-Amz-Signature", flipped), http.StatusForbidden, "SignatureDoesNotMatch"},
		{"longer expiry", tamper("X-Amz-Expires", "604800"), http.StatusForbidden, "SignatureDoesNotMatch"},
		{"other blob", strings.Replace(loc, u.Path, u.Path[:len(u.Path)-1]+"0", 1), http.StatusForbidden, "SignatureDoesNotMatch"},
		{"no query", f.S3URL() + u.Path, http.StatusForbidden, "AccessDenied"},
		{"missing parameter", tamper("X-Amz-Date", ""), http.StatusBadRequest, "AuthorizationQueryParametersError"},
	} {
		wantS3Error(t, do(t, c, http.MethodGet, tc.url), tc.status, tc.code)
	}
	// The signature covers the host the URL names.
	req, err := http.NewRequest(http.MethodGet, loc, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("other Host header: %d, want 403", resp.StatusCode)
	}
	if r := do(t, c, http.MethodGet, loc); r.StatusCode != http.StatusOK {
		t.Fatalf("untouched URL: %d %s", r.StatusCode, r.body)
	}

	clk.Advance(time.Minute + time.Second)
	if msg := wantS3Error(t, do(t, c, http.MethodGet, loc), http.StatusForbidden, "AccessDenied"); msg != "Request has expired" {
		t.Errorf("expired URL message %q", msg)
	}
	if r := do(t, c, http.MethodHead, loc); r.StatusCode != http.StatusForbidden || len(r.body) != 0 {
		t.Errorf("expired URL HEAD: %d, %d body bytes", r.StatusCode, len(r.body))
	}

	got := f.Counters()
	if got.S3AuthRejected != 3 || got.S3SignatureRejected != 7 {
		t.Errorf("S3AuthRejected %d, S3SignatureRejected %d; want 3, 7", got.S3AuthRejected, got.S3SignatureRejected)
	}
	var rejected int
	for _, req := range got.Requests {
		if req.Endpoint == EndpointS3 && req.Authorization {
			rejected++
			if req.Status != http.StatusBadRequest {
				t.Errorf("logged %+v", req)
			}
		}
	}
	if rejected != 3 {
		t.Errorf("%d logged S3 requests with Authorization, want 3", rejected)
	}
}

func TestS3Range(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	data := []byte("0123456789abcdefghij") // 20 bytes
	loc, dgst := presignedURL(t, f, c, data)

	for _, tc := range []struct {
		rng       string
		status    int
		want      string
		wantRange string
	}{
		{"bytes=0-9", http.StatusPartialContent, "0123456789", "bytes 0-9/20"},
		{"bytes=5-5", http.StatusPartialContent, "5", "bytes 5-5/20"},
		{"bytes=15-", http.StatusPartialContent, "fghij", "bytes 15-19/20"},
		{"bytes=-3", http.StatusPartialContent, "hij", "bytes 17-19/20"},
		{"bytes=-30", http.StatusPartialContent, string(data), "bytes 0-19/20"},
		{"bytes=10-1000", http.StatusPartialContent, "abcdefghij", "bytes 10-19/20"},
		{"bytes=20-", http.StatusRequestedRangeNotSatisfiable, "", "bytes */20"},
		{"bytes=-0", http.StatusRequestedRangeNotSatisfiable, "", "bytes */20"},
		{"bytes=0-1,4-5", http.StatusOK, string(data), ""},
		{"bytes=5-1", http.StatusOK, string(data), ""},
		{"items=0-1", http.StatusOK, string(data), ""},
		{"", http.StatusOK, string(data), ""},
	} {
		var headers []string
		if tc.rng != "" {
			headers = append(headers, "Range: "+tc.rng)
		}
		r := do(t, c, http.MethodGet, loc, headers...)
		if r.StatusCode != tc.status || r.Header.Get("Content-Range") != tc.wantRange {
			t.Errorf("Range %q: %d, Content-Range %q; want %d, %q", tc.rng, r.StatusCode, r.Header.Get("Content-Range"), tc.status, tc.wantRange)
			continue
		}
		if tc.status == http.StatusRequestedRangeNotSatisfiable {
			wantS3Error(t, r, tc.status, "InvalidRange")
		} else if string(r.body) != tc.want {
			t.Errorf("Range %q: body %q, want %q", tc.rng, r.body, tc.want)
		}
	}
	got := f.Counters()
	if got.S3Get[dgst] != 4 || got.S3RangeGet[dgst] != 8 {
		t.Errorf("S3Get %d, S3RangeGet %d; want 4, 8", got.S3Get[dgst], got.S3RangeGet[dgst])
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=3-", "bytes=9-3", "bytes=0-1,2-3", "bytes=-", "bytes= 1-2"} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return
		}
		start, end, kind := parseRange(h, size)
		switch kind {
		case rangeNone:
			if start != 0 || end != size {
				t.Fatalf("parseRange(%q, %d) = %d, %d for the whole object", h, size, start, end)
			}
		case rangeSatisfiable:
			if start < 0 || start >= end || end > size {
				t.Fatalf("parseRange(%q, %d) = [%d, %d)", h, size, start, end)
			}
		}
	})
}

// TestConcurrentPulls pulls one blob through registry and S3 with 32 clients
// at once, as the mirror's tests will.
func TestConcurrentPulls(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	dgst := f.PutBlob("big/blob", data)
	tok := token(t, f)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(c.CloseIdleConnections)

	const clients = 32
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for range clients {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, f.URL()+"/v2/big/blob/blobs/"+dgst.String(), nil)
			req.Header.Set("Authorization", "Basic "+tok)
			// net/http would forward the header to S3 (same host name, other
			// port); a RoundTripper-free client must drop it on redirect.
			c := *c
			c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
				req.Header.Del("Authorization")
				return nil
			}
			resp, err := c.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			v := dgst.Verifier()
			n, err := io.Copy(v, resp.Body)
			if resp.StatusCode != http.StatusOK || err != nil || n != int64(len(data)) || !v.Verified() {
				errs <- fmt.Sprintf("status %d, read %d bytes (%v), verified %v", resp.StatusCode, n, err, v.Verified())
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Counters are recorded as handlers return, maybe just after clients
	// have read their whole answers.
	got := f.Counters()
	for deadline := time.Now().Add(time.Minute); got.S3BytesSent != clients*int64(len(data)) && time.Now().Before(deadline); got = f.Counters() {
		time.Sleep(5 * time.Millisecond)
	}
	if got.BlobGet != clients || got.S3Get[dgst] != clients || got.S3BytesSent != clients*int64(len(data)) {
		t.Errorf("BlobGet %d, S3Get %d, S3BytesSent %d", got.BlobGet, got.S3Get[dgst], got.S3BytesSent)
	}
}
