package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// TestLoginStormLatency measures what a storm of wrong logins costs a
// client that is already logged in: the p50 of its cached-blob GETs with
// no storm, then while 32 goroutines send wrong passwords (each a new one,
// so each costs a bcrypt run when checked), first from 32 addresses of
// their own (127.0.0.2-33: only the bcrypt slots hold them back), then all
// from the client's own address (the address block too), in the same run,
// against an htpasswd entry at bcrypt's default cost. The storm loops send
// their next guess as soon as an answer comes, so once guesses are refused
// cheaply (429) they become a flood of requests sharing the same CPUs: what
// is left of the slowdown is that, and the storm answers counted by status
// show how few bcrypt runs (401s) it still got. It is a measurement, not a
// check:
//
//	ECR_MIRROR_BENCH=1 go test -run TestLoginStormLatency -v ./cmd/ecr-mirror/
func TestLoginStormLatency(t *testing.T) {
	if os.Getenv("ECR_MIRROR_BENCH") == "" {
		t.Skip("a measurement; set ECR_MIRROR_BENCH=1 to run it")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("a-pw"), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fake := fakeecr.Start(t, fakeecr.Options{})
	dgst := fake.PutBlob("team/app", testkit.RandomBytes(40, 16<<10))
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"HTPASSWD_FILE": htpasswd}})
	blobURL := m.URL + "/v2/team/app/blobs/" + dgst.String()

	good := &http.Client{Transport: newTransport(t)}
	fetch := func() (time.Duration, int) {
		req, _ := http.NewRequest("GET", blobURL, nil)
		req.SetBasicAuth("alice", "a-pw")
		start := time.Now()
		resp, err := good.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start), resp.StatusCode
	}
	if _, code := fetch(); code != 200 { // logs in, fills the cache
		t.Fatalf("first fetch: %d", code)
	}
	testwait.Until(t, "blob stored", func() bool { return m.stored(dgst) })
	p50 := func(n int) time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			d, code := fetch()
			if code != 200 {
				t.Fatalf("logged-in fetch: %d", code)
			}
			ds[i] = d
		}
		slices.Sort(ds)
		return ds[n/2]
	}

	// storm runs 32 wrong-login loops until stop is called; local gives
	// loop i its source address.
	storm := func(local func(i int) string) (stop func() map[int]int) {
		var answered atomic.Int64
		var mu sync.Mutex
		codes := map[int]int{}
		done := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 32 {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local(i))}}).DialContext
			c := &http.Client{Transport: tr}
			wg.Go(func() {
				defer tr.CloseIdleConnections()
				for n := 0; ; n++ {
					select {
					case <-done:
						return
					default:
					}
					req, _ := http.NewRequest("GET", m.URL+"/v2/", nil)
					req.SetBasicAuth("alice", fmt.Sprintf("guess-%d-%d", i, n))
					resp, err := c.Do(req)
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					answered.Add(1)
					mu.Lock()
					codes[resp.StatusCode]++
					mu.Unlock()
				}
			})
		}
		for answered.Load() < 32 { // every loop under way
			time.Sleep(10 * time.Millisecond)
		}
		return func() map[int]int {
			close(done)
			wg.Wait()
			return codes
		}
	}

	const n = 100
	quiet := p50(2 * n)
	stop := storm(func(i int) string { return fmt.Sprintf("127.0.0.%d", i+2) })
	spread := p50(n)
	spreadCodes := stop()
	stop = storm(func(int) string { return "127.0.0.1" })
	single := p50(n)
	singleCodes := stop()
	quietAgain := p50(2 * n)
	t.Logf("logged-in cached-blob GET p50: no storm %v; storm from 32 addresses %v (%.1fx); storm from the client's address %v (%.1fx); no storm again %v",
		quiet, spread, float64(spread)/float64(quiet), single, float64(single)/float64(quiet), quietAgain)
	t.Logf("storm answers: from 32 addresses %v; from one address %v", spreadCodes, singleCodes)
}
