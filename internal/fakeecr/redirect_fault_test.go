package fakeecr

import (
	"net/http"
	"testing"
)

func TestFaultRedirect(t *testing.T) {
	t.Parallel()
	const elsewhere = "http://127.0.0.1:1/internal?secret=1"
	tests := []struct {
		name     string
		fault    Fault
		manifest bool // ask for the manifest instead of the blob
		wantS3   bool // the registry still redirects to S3, which redirects on
	}{
		{name: "registry blob", fault: Fault{Mode: FaultRedirect, Location: elsewhere}},
		{name: "registry manifest", fault: Fault{Mode: FaultRedirect, Location: elsewhere}, manifest: true},
		{name: "s3", fault: Fault{Mode: FaultRedirect, Location: elsewhere, Endpoint: EndpointS3}, wantS3: true},
		{name: "file scheme", fault: Fault{Mode: FaultRedirect, Location: "file:///etc/passwd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			x := newFaultFixture(t)
			x.f.SetFault("", tt.fault)
			var r response
			var err error
			switch {
			case tt.manifest:
				r, err = x.manifestGet(t)
			case tt.wantS3: // follows the registry's redirect to S3
				r, err = x.blobGet(t)
			default:
				r, err = try(x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/blobs/"+x.blobDgst.String(), x.auth)
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode != http.StatusTemporaryRedirect || r.Header.Get("Location") != tt.fault.Location {
				t.Fatalf("got %d Location %q, want 307 to %q", r.StatusCode, r.Header.Get("Location"), tt.fault.Location)
			}
			c := x.f.Counters()
			if got := c.S3Get[x.blobDgst]; (got == 1) != tt.wantS3 {
				t.Errorf("S3 GETs %d, want S3 reached: %v", got, tt.wantS3)
			}
			if c.Faults != 1 {
				t.Errorf("Faults = %d, want 1", c.Faults)
			}
		})
	}
}

func TestRequestLogRecordsRefererAndUserAgent(t *testing.T) {
	t.Parallel()
	x := newFaultFixture(t)
	const ref = "http://example.test/previous?X-Amz-Signature=s"
	do(t, x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/manifests/v1", x.auth, "Referer: "+ref, "User-Agent: probe/1.0")
	do(t, x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/manifests/v1", x.auth)
	reqs := x.f.Counters().Requests
	if len(reqs) < 2 {
		t.Fatalf("request log has %d entries, want at least 2", len(reqs))
	}
	if got := reqs[len(reqs)-2].Referer; got != ref {
		t.Errorf("Referer %q, want %q", got, ref)
	}
	if got := reqs[len(reqs)-2].UserAgent; got != "probe/1.0" {
		t.Errorf("User-Agent %q, want probe/1.0", got)
	}
	if got := reqs[len(reqs)-1].Referer; got != "" {
		t.Errorf("Referer %q on a request without one", got)
	}
}
