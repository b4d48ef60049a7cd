package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
)

// probes answers /healthz (the process is alive) and /readyz (it can
// serve: cache directory writable, index open, a valid ECR token in hand).
// Neither needs client credentials: they are for the orchestrator.
type probes struct {
	cacheDir string
	store    *cache.Store
	tokens   *auth.Source
}

// ServeHTTP answers /healthz and /readyz; other paths are not its own.
func (p *probes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "/healthz" {
		fmt.Fprintln(w, "ok")
		return
	}
	lines, ready := p.check()
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

// check runs every readiness check and says how each went.
func (p *probes) check() (lines []string, ready bool) {
	ready = true
	report := func(what string, err error) {
		if err != nil {
			ready = false
			lines = append(lines, fmt.Sprintf("%s: NOT READY: %v", what, err))
			return
		}
		lines = append(lines, what+": ok")
	}
	report("cache directory writable", p.writable())
	_, err := p.store.Stat(digest.FromString("readyz"))
	if errors.Is(err, cache.ErrNotFound) {
		err = nil
	}
	report("cache index open", err)
	if at, ok := p.tokens.Ready(); ok {
		lines = append(lines, fmt.Sprintf("ECR token: ok (expires %s)", at.UTC().Format(time.RFC3339)))
	} else {
		ready = false
		lines = append(lines, "ECR token: NOT READY: no valid token yet (see the log for why GetAuthorizationToken fails)")
	}
	return lines, ready
}

// writable creates and removes a file where downloads are written.
func (p *probes) writable() error {
	f, err := os.CreateTemp(filepath.Join(p.cacheDir, "tmp"), ".readyz-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, werr := f.Write([]byte("ok"))
	cerr := f.Close()
	rerr := os.Remove(name)
	return errors.Join(werr, cerr, rerr)
}
