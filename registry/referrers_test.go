package registry

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// referrersBackend is a fakeBackend that also lists referrers.
type referrersBackend struct {
	fakeBackend
	list     ReferrerList
	gotName  string
	gotDgst  digest.Digest
	gotQuery string
}

func (b *referrersBackend) Referrers(_ context.Context, name string, dgst digest.Digest, rawQuery string) (*ReferrerList, error) {
	b.gotName, b.gotDgst, b.gotQuery = name, dgst, rawQuery
	l := b.list
	return &l, nil
}

// The referrers API reaches the client as an image index: passed on as
// upstream sent it, an empty manifests list when upstream had none, the
// filters it applied, the next page on the mirror; a backend that cannot
// list referrers answers 404 UNSUPPORTED, so clients fall back to tags.
func TestReferrersPassedThrough(t *testing.T) {
	t.Parallel()
	const index = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"` + testDigest + `"}]}`
	tests := []struct {
		name, query string
		list        ReferrerList
		status      int
		body        string
		code        Code
		wantHeader  map[string]string
	}{
		{name: "as sent", list: ReferrerList{Body: []byte(index)}, status: 200, body: index,
			wantHeader: map[string]string{"Content-Type": oci.MediaTypeImageIndex, "Link": "", "OCI-Filters-Applied": "", "Warning": ""}},
		{name: "filtered, paged", query: "?artifactType=a%2Fb&ns=docker.io", list: ReferrerList{Body: []byte(index), FiltersApplied: "artifactType", NextQuery: "next=2"}, status: 200, body: index,
			wantHeader: map[string]string{"OCI-Filters-Applied": "artifactType"}},
		{name: "stale", list: ReferrerList{Body: []byte(index), Warning: `110 - "Response is Stale"`, Outcome: "stale"}, status: 200, body: index,
			wantHeader: map[string]string{"Warning": `110 - "Response is Stale"`}},
		{name: "null manifests", list: ReferrerList{Body: []byte(`{"schemaVersion":2,"manifests":null}`)}, status: 200,
			body: `{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}`},
		{name: "not an index", list: ReferrerList{Body: []byte(`[1,2]`)}, status: 502, code: CodeUnavailable},
		{name: "manifests not a list", list: ReferrerList{Body: []byte(`{"manifests":{}}`)}, status: 502, code: CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := &referrersBackend{list: tt.list}
			ns, err := NewNamespaces(map[string]string{"docker.io": "docker-hub"}, "")
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(NewHandler(b, nil, WithNamespaces(ns, "")))
			t.Cleanup(srv.Close)
			resp, body, err := do(t, "GET", srv.URL+"/v2/team/app/referrers/"+testDigest+tt.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantAnswer(t, resp, body, tt.status, tt.code, tt.body)
			if tt.code != "" {
				return
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			if tt.list.NextQuery != "" {
				want := "<" + srv.URL + "/v2/team/app/referrers/" + testDigest + "?next=2&ns=docker.io>; rel=\"next\""
				if got := resp.Header.Get("Link"); got != want {
					t.Errorf("Link %q, want %q", got, want)
				}
				if b.gotName != "docker-hub/team/app" || b.gotQuery != "artifactType=a%2Fb" {
					t.Errorf("backend asked for %q with query %q", b.gotName, b.gotQuery)
				}
			}
		})
	}
	t.Run("backend without referrers", func(t *testing.T) {
		t.Parallel()
		srv := newTestServer(t, &fakeBackend{})
		resp, body, err := do(t, "GET", srv.URL+"/v2/team/app/referrers/"+testDigest, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 404 || errorCode(t, body) != CodeUnsupported {
			t.Fatalf("status %d %s, want 404 UNSUPPORTED", resp.StatusCode, body)
		}
	})
}
