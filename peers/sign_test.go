package peers

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

const testSecret = "0123456789abcdef-peer-secret"

// A signature holds for its method, path and query, from the same
// secret, within the window; the secret itself is never sent.
func TestSignatures(t *testing.T) {
	t.Parallel()
	path := "/peer/v1/r.example/blobs/sha256:" + strings.Repeat("a", 64) + "/team/app"
	tests := []struct {
		name   string
		mutate func(r *http.Request, clk *clockwork.FakeClock) *Signer // the verifier
		ok     bool
	}{
		{name: "signed", ok: true},
		{name: "a little behind", mutate: func(_ *http.Request, clk *clockwork.FakeClock) *Signer {
			clk.Advance(SignatureWindow - time.Second)
			return nil
		}, ok: true},
		{name: "too old", mutate: func(_ *http.Request, clk *clockwork.FakeClock) *Signer {
			clk.Advance(SignatureWindow + time.Second)
			return nil
		}},
		{name: "from the future", mutate: func(_ *http.Request, clk *clockwork.FakeClock) *Signer {
			return NewSigner(testSecret, clockwork.NewFakeClockAt(clk.Now().Add(-SignatureWindow-time.Second)))
		}},
		{name: "another secret", mutate: func(*http.Request, *clockwork.FakeClock) *Signer { return NewSigner("another-secret-of-16+", nil) }},
		{name: "unsigned", mutate: func(r *http.Request, _ *clockwork.FakeClock) *Signer {
			r.Header.Del(headerSignature)
			r.Header.Del(headerTime)
			return nil
		}},
		{name: "other path", mutate: func(r *http.Request, _ *clockwork.FakeClock) *Signer { r.URL.Path += "x"; return nil }},
		{name: "query added", mutate: func(r *http.Request, _ *clockwork.FakeClock) *Signer { r.URL.RawQuery = "a=b"; return nil }},
		{name: "other method", mutate: func(r *http.Request, _ *clockwork.FakeClock) *Signer { r.Method = http.MethodHead; return nil }},
		{name: "time changed", mutate: func(r *http.Request, _ *clockwork.FakeClock) *Signer {
			r.Header.Set(headerTime, r.Header.Get(headerTime)+"0")
			return nil
		}},
		{name: "malformed time", mutate: func(r *http.Request, _ *clockwork.FakeClock) *Signer { r.Header.Set(headerTime, "soon"); return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := clockwork.NewFakeClock()
			signer := NewSigner(testSecret, clk)
			r, err := http.NewRequest(http.MethodGet, "http://10.0.0.1:5001"+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			signer.Sign(r)
			for k, vs := range r.Header {
				for _, v := range vs {
					if strings.Contains(v, testSecret) {
						t.Fatalf("header %s carries the secret", k)
					}
				}
			}
			verifier := signer
			if tt.mutate != nil {
				if v := tt.mutate(r, clk); v != nil {
					verifier = v
				}
			}
			if err := verifier.Verify(r); (err == nil) != tt.ok {
				t.Fatalf("Verify = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
