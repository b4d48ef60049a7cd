package fakeecr

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkS3Get measures the blob-serving fast path: one presigned S3 GET
// of a 16 MiB blob per op, from parallel clients over keep-alive connections.
func BenchmarkS3Get(b *testing.B) {
	f, err := New(Options{RequestLogSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 16<<20)
	dgst := f.PutBlob("bench", data)
	tok, _ := f.IssueToken()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, f.URL()+"/v2/bench/blobs/"+dgst.String(), nil)
	req.Header.Set("Authorization", "Basic "+tok)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")

	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(loc)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if n != int64(len(data)) {
				b.Errorf("read %d bytes", n)
				return
			}
		}
	})
}

// BenchmarkBlobRedirect measures the registry's blob GET: auth check, lookup
// and presigning, answered with 307.
func BenchmarkBlobRedirect(b *testing.B) {
	f, err := New(Options{RequestLogSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	dgst := f.PutBlob("bench", []byte("x"))
	tok, _ := f.IssueToken()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u := f.URL() + "/v2/bench/blobs/" + dgst.String()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			req.Header.Set("Authorization", "Basic "+tok)
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusTemporaryRedirect {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
