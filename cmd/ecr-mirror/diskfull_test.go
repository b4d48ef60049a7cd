package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/internal/tmpfs"
)

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// A blob larger than the whole cache filesystem (a 24 MiB tmpfs): four
// concurrent clients each get the whole verified body, nothing partial is
// left, the process and its index keep working, the metric counts the
// event, and a blob that fits is stored afterwards, surviving a restart.
func TestDiskFullOnRealFilesystem(t *testing.T) {
	t.Parallel()
	dir := tmpfs.Mount(t, "24m")
	fake := fakeecr.Start(t, fakeecr.Options{})
	big := fake.PutBlob("team/app", testkit.RandomBytes(70, 40<<20))
	small := fake.PutBlob("team/app", testkit.RandomBytes(71, 1<<20))
	// The body stops after 64 KiB until all four clients follow the one
	// download.
	hold := make(chan struct{})
	fake.SetFault(big, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 64 << 10, Hold: hold, Times: 1})
	m := startMirror(t, fake, mirrorOpts{dir: dir, maxSize: "1g"})
	t.Logf("free on the cache filesystem with the mirror started: %d bytes", freeBytes(t, dir))
	before := scrape(t, m.URL+"/metrics")

	wait := startFetches(t, m, "team/app", big, 4)
	close(hold)
	for i, err := range wait() {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	testwait.Until(t, "the download to finish", func() bool {
		return scrape(t, m.URL+"/metrics")[`ecr_mirror_downloads_in_flight`] == 0
	})
	after := scrape(t, m.URL+"/metrics")
	if d := after[`ecr_mirror_downloads_total`] - before[`ecr_mirror_downloads_total`]; d != 1 {
		t.Errorf("downloads moved by %v, want 1 (all four clients on one download)", d)
	}
	if d := after[`ecr_mirror_cache_disk_full_total`] - before[`ecr_mirror_cache_disk_full_total`]; d != 1 {
		t.Errorf("ecr_mirror_cache_disk_full_total moved by %v, want 1", d)
	}
	if d := after[`ecr_mirror_download_failures_total`] - before[`ecr_mirror_download_failures_total`]; d != 0 {
		t.Errorf("download failures moved by %v, want 0", d)
	}
	if !strings.Contains(m.Logs.String(), "disk full") {
		t.Errorf("no warning says the disk is full; logs:\n%s", m.Logs)
	}
	testwait.Until(t, "no temp file left", func() bool { return len(m.tempFiles(t)) == 0 })
	if m.stored(big) || m.storedBytes(t) != 0 {
		t.Errorf("something of the big blob was stored: %d bytes under blobs/", m.storedBytes(t))
	}
	if resp, body, err := get(t, "GET", m.URL+"/readyz", nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz after the full disk: %v %v %s", resp, err, body)
	}

	// A blob that fits is stored as usual.
	if err := fetchBlob(t, m, "team/app", small); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the small blob stored", func() bool { return m.stored(small) })
	if d := scrape(t, m.URL+"/metrics")[`ecr_mirror_cache_disk_full_total`] - after[`ecr_mirror_cache_disk_full_total`]; d != 0 {
		t.Errorf("disk full counted %v more times for a blob that fits", d)
	}

	// The index survived: after a restart the small blob is a hit.
	m.Stop()
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("temp files after stop: %v", ents)
	}
	m = startMirror(t, fake, mirrorOpts{dir: dir, maxSize: "1g"})
	before = scrape(t, m.URL+"/metrics")
	if err := fetchBlob(t, m, "team/app", small); err != nil {
		t.Fatal(err)
	}
	if d := scrape(t, m.URL+"/metrics")[`ecr_mirror_cache_requests_total{outcome="hit"}`] - before[`ecr_mirror_cache_requests_total{outcome="hit"}`]; d != 1 {
		t.Errorf("the small blob after a restart: hits moved by %v, want 1", d)
	}
}
