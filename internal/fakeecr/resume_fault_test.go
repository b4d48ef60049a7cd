package fakeecr

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// s3Get asks the registry for the fixture's blob and fetches the S3 URL it
// redirects to, with a Range header when rng is not empty.
func (x *faultFixture) s3Get(t *testing.T, rng string) response {
	t.Helper()
	r := do(t, x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/blobs/"+x.blobDgst.String(), x.auth)
	if r.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("registry answered %d, want 307", r.StatusCode)
	}
	var hdr []string
	if rng != "" {
		hdr = append(hdr, "Range: "+rng)
	}
	return do(t, x.c, http.MethodGet, r.Header.Get("Location"), hdr...)
}

// A truncated body is cut After bytes into what was asked: a client that
// resumes where it stopped meets the cuts at After, 2×After, ...
func TestFaultTruncateResumed(t *testing.T) {
	t.Parallel()
	x := newFaultFixture(t)
	size := int64(len(x.blob))
	quarter := size / 4
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultTruncate, After: quarter, Times: 3})
	var got []byte
	for i := range 4 {
		rng := ""
		if i > 0 {
			rng = "bytes=" + strconv.FormatInt(int64(len(got)), 10) + "-"
		}
		r := x.s3Get(t, rng)
		got = append(got, r.body...)
		if i < 3 {
			if !errors.Is(r.err, io.ErrUnexpectedEOF) || int64(len(got)) != quarter*int64(i+1) {
				t.Fatalf("request %d: %d bytes so far, err %v; want a cut at %d", i, len(got), r.err, quarter*int64(i+1))
			}
		} else if r.err != nil || r.StatusCode != http.StatusPartialContent {
			t.Fatalf("last request: %d, err %v", r.StatusCode, r.err)
		}
	}
	if !bytes.Equal(got, x.blob) {
		t.Fatal("the pieces do not make the blob")
	}
	c := x.f.Counters()
	if c.S3BlobBytes[x.blobDgst] != size || c.S3Get[x.blobDgst] != 1 || c.S3RangeGet[x.blobDgst] != 3 {
		t.Errorf("S3BlobBytes %d (want %d), S3Get %d (want 1), S3RangeGet %d (want 3)",
			c.S3BlobBytes[x.blobDgst], size, c.S3Get[x.blobDgst], c.S3RangeGet[x.blobDgst])
	}
	// Hold holds the cut body open until it is closed: the client has
	// its 1000 bytes and waits, then meets the cut.
	hold := make(chan struct{})
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultTruncate, After: 1000, Hold: hold, Times: 1})
	resp, first := x.s3Open(t, 1000)
	close(hold)
	rest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(first, x.blob[:1000]) || len(rest) != 0 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Hold: %d bytes, then %d more and err %v; want 1000, then a cut", len(first), len(rest), err)
	}
	// A negative After sends the headers and no body byte.
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultTruncate, After: -1, Times: 1})
	if r := x.s3Get(t, ""); r.StatusCode != http.StatusOK || len(r.body) != 0 || !errors.Is(r.err, io.ErrUnexpectedEOF) {
		t.Fatalf("After -1: %d, %d bytes, err %v", r.StatusCode, len(r.body), r.err)
	}
}

// s3Open asks the registry for the fixture's blob, opens the S3 URL it
// redirects to and reads the first n body bytes; the rest of the body is
// left to the caller.
func (x *faultFixture) s3Open(t *testing.T, n int) (*http.Response, []byte) {
	t.Helper()
	r := do(t, x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/blobs/"+x.blobDgst.String(), x.auth)
	resp, err := x.c.Get(r.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	first := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("reading the first %d bytes: %v", n, err)
	}
	return resp, first
}

// A stall sends After bytes and then holds the connection until the client
// gives up; with Hold (or Delay) it pauses and then sends the rest.
func TestFaultStall(t *testing.T) {
	t.Parallel()
	x := newFaultFixture(t)
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultStall, After: 1000, Times: 1})
	r := do(t, x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/blobs/"+x.blobDgst.String(), x.auth)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.Header.Get("Location"), nil)
	resp, err := x.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, first); err != nil || !bytes.Equal(first, x.blob[:1000]) {
		t.Fatalf("the first 1000 bytes: %v", err)
	}
	// Nothing more comes until the client gives up.
	rest := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(resp.Body); rest <- b }()
	cancel()
	if b := <-rest; len(b) != 0 {
		t.Fatalf("the stalled body sent %d more bytes", len(b))
	}
	resp.Body.Close()

	// A pause: the rest follows once Hold is closed.
	hold := make(chan struct{})
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultStall, After: 1000, Hold: hold, Times: 1})
	resp, first = x.s3Open(t, 1000)
	close(hold)
	if b, err := io.ReadAll(resp.Body); err != nil || !bytes.Equal(append(first, b...), x.blob) {
		t.Fatalf("pause: %d bytes, err %v", len(first)+len(b), err)
	}
	// A pause of Delay.
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultStall, After: 1000, Delay: time.Millisecond, Times: 1})
	if r := x.s3Get(t, ""); r.err != nil || !bytes.Equal(r.body, x.blob) {
		t.Fatalf("pause: %d bytes, err %v", len(r.body), r.err)
	}
	// The stalled request is logged with what it sent.
	eventuallyLogged(t, x.f, func(req Request) bool { return req.Endpoint == EndpointS3 && req.Bytes == 1000 && req.Status == 200 })
}

// eventuallyLogged waits for a request matching ok in the request log: a
// handler that ends because its client went away is logged after that.
func eventuallyLogged(t *testing.T, f *Server, ok func(Request) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, req := range f.Counters().Requests {
			if ok(req) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no such request logged: %+v", f.Counters().Requests)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Range faults act on ranged S3 GETs only; Then chains them after another
// fault.
func TestFaultRanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		fault     Fault
		rng       string
		status    int
		from, to  int64 // the bytes answered, [from, to); -1: the end
		right     int64 // where the range asked for starts
		wantRange string
	}{
		{name: "ignore range", fault: Fault{Mode: FaultIgnoreRange}, rng: "bytes=100-", status: 200, from: 0, to: -1, right: 100},
		{name: "wrong range default shift", fault: Fault{Mode: FaultWrongRange}, rng: "bytes=100-", status: 206, from: 99, to: -1, right: 100, wantRange: "bytes 99-"},
		{name: "wrong range shift", fault: Fault{Mode: FaultWrongRange, After: 50}, rng: "bytes=100-199", status: 206, from: 50, to: 200, right: 100, wantRange: "bytes 50-199/"},
		{name: "wrong range at start", fault: Fault{Mode: FaultWrongRange, After: 10}, rng: "bytes=0-", status: 206, from: 10, to: -1, right: 0, wantRange: "bytes 10-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x := newFaultFixture(t)
			size := int64(len(x.blob))
			if tc.to < 0 {
				tc.to = size
			}
			tc.fault.Times = 1
			x.f.SetFault(x.blobDgst, tc.fault)
			// A GET without Range does not meet the fault (nor use it up).
			if r := x.s3Get(t, ""); r.StatusCode != 200 || !bytes.Equal(r.body, x.blob) {
				t.Fatalf("whole GET: %d, %d bytes", r.StatusCode, len(r.body))
			}
			r := x.s3Get(t, tc.rng)
			if r.StatusCode != tc.status || r.err != nil || !bytes.Equal(r.body, x.blob[tc.from:tc.to]) {
				t.Fatalf("%s: %d with %d bytes (err %v); want %d with bytes [%d,%d)", tc.rng, r.StatusCode, len(r.body), r.err, tc.status, tc.from, tc.to)
			}
			if cr := r.Header.Get("Content-Range"); tc.wantRange != "" && (len(cr) < len(tc.wantRange) || cr[:len(tc.wantRange)] != tc.wantRange) {
				t.Errorf("Content-Range %q, want it to start %q", cr, tc.wantRange)
			}
			// Used up: the next answer is the range asked for.
			if r := x.s3Get(t, tc.rng); r.StatusCode != 206 || !bytes.Equal(r.body, x.blob[tc.right:tc.to]) {
				t.Errorf("after the fault: %d %q, %d bytes", r.StatusCode, r.Header.Get("Content-Range"), len(r.body))
			}
		})
	}
}

func TestFaultThen(t *testing.T) {
	t.Parallel()
	x := newFaultFixture(t)
	size := int64(len(x.blob))
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultTruncate, After: 1000, Times: 1,
		Then: &Fault{Mode: FaultIgnoreRange, Times: 1}})
	if r := x.s3Get(t, ""); len(r.body) != 1000 || r.err == nil {
		t.Fatalf("first: %d bytes, err %v; want a cut at 1000", len(r.body), r.err)
	}
	if r := x.s3Get(t, "bytes=1000-"); r.StatusCode != 200 || int64(len(r.body)) != size {
		t.Fatalf("second: %d with %d bytes; want 200 with the whole blob", r.StatusCode, len(r.body))
	}
	if r := x.s3Get(t, "bytes=1000-"); r.StatusCode != 206 || !bytes.Equal(r.body, x.blob[1000:]) {
		t.Fatalf("third: %d with %d bytes; want 206 with the rest", r.StatusCode, len(r.body))
	}
	if c := x.f.Counters(); c.Faults != 2 {
		t.Errorf("Faults %d, want 2", c.Faults)
	}
}

func TestNewFaultModeStrings(t *testing.T) {
	t.Parallel()
	for m, want := range map[FaultMode]string{FaultStall: "stall", FaultIgnoreRange: "ignore-range", FaultWrongRange: "wrong-range"} {
		if m.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), want)
		}
	}
}
