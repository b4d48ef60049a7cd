package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// The monitoring files under deploy/, and the chart's copies of them
// (a chart reads only files inside itself).
const (
	alertsFile         = "../../deploy/monitoring/alerts.yaml"
	dashboardFile      = "../../deploy/monitoring/grafana-dashboard.json"
	chartAlertsFile    = "../../deploy/helm/ecr-mirror/files/alerts.yaml"
	chartDashboardFile = "../../deploy/helm/ecr-mirror/files/grafana-dashboard.json"
)

// Every ecr_mirror_* metric the alerts and the dashboard name is one a
// running mirror exports: from its start, or for those labelled by
// traffic, once a pull and an upstream error have happened.
func TestMonitoringNamesOnlyMetricsTheMirrorExports(t *testing.T) {
	t.Parallel()
	// The metrics whose label values (route, method, status, upstream
	// host, kind) are only known once requests have been made: they
	// cannot exist before the first one. Every other metric the rules and
	// the dashboard name must exist from the mirror's start, or an alert
	// on it never fires until the event it watches for.
	seriesFromTraffic := map[string]bool{
		"ecr_mirror_http_requests_total":               true,
		"ecr_mirror_http_request_duration_seconds":     true,
		"ecr_mirror_upstream_requests_total":           true,
		"ecr_mirror_upstream_request_duration_seconds": true,
		"ecr_mirror_upstream_errors_total":             true,
	}
	used := map[string][]string{} // metric -> files naming it
	for _, f := range []string{alertsFile, dashboardFile} {
		names := metricNames(t, f)
		if len(names) == 0 {
			t.Fatalf("%s names no ecr_mirror_* metric", f)
		}
		for _, n := range names {
			used[n] = append(used[n], filepath.Base(f))
		}
	}

	fake := fakeecr.Start(t, fakeecr.Options{})
	img, err := random.Image(32<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	putImage(t, fake, "team/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{})

	atStart := exportedFamilies(t, m.URL+"/metrics")
	for _, n := range sortedKeys(used) {
		if family(n, atStart) == "" && !seriesFromTraffic[histogramFamily(n)] {
			t.Errorf("%s (in %s) does not exist when the mirror starts", n, strings.Join(used[n], ", "))
		}
	}

	// Traffic: a miss, a hit, and an upstream that answers 500.
	for range 2 {
		if _, err := pullImage(t, m, "team/app:v1"); err != nil {
			t.Fatal(err)
		}
	}
	fake.SetFault("", fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 500})
	other, err := random.Image(32<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, blobs := putImage(t, fake, "team/other", "v1", other)
	if resp, _, err := get(t, "GET", m.URL+"/v2/team/other/blobs/"+blobs[0].String(), nil); err != nil || resp.StatusCode < 500 {
		t.Fatalf("uncached blob while upstream answers 500: %v, want a 5xx", describe(resp, err))
	}
	fake.ClearFaults()

	after := exportedFamilies(t, m.URL+"/metrics")
	for _, n := range sortedKeys(used) {
		if family(n, after) == "" {
			t.Errorf("%s (in %s) is not among the mirror's metrics after a pull and an upstream error", n, strings.Join(used[n], ", "))
		}
	}
}

// The chart renders the alerts and the dashboard from its own copies:
// they must be the files under deploy/monitoring.
func TestChartMonitoringCopiesAreEqual(t *testing.T) {
	t.Parallel()
	for orig, copied := range map[string]string{alertsFile: chartAlertsFile, dashboardFile: chartDashboardFile} {
		a, err := os.ReadFile(orig)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(copied)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s: copy it over (cp %s %s)", copied, orig,
				strings.TrimPrefix(orig, "../../"), strings.TrimPrefix(copied, "../../"))
		}
	}
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string            `json:"uid"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Errorf("%s: uid %q and %d panels, want a uid and panels", dashboardFile, dash.UID, len(dash.Panels))
	}
}

// describe is a response's status, or the error that came instead.
func describe(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

var metricName = regexp.MustCompile(`ecr_mirror_[a-z0-9_]*[a-z0-9]`)

// metricNames lists the distinct ecr_mirror_* names in file.
func metricNames(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, n := range metricName.FindAllString(string(data), -1) {
		seen[n] = true
	}
	return sortedKeys(seen)
}

// family is the metric family in families that the series name n belongs
// to (a histogram's _bucket, _sum and _count are its family's); "" when
// none.
func family(n string, families map[string]bool) string {
	switch {
	case families[n]:
		return n
	case families[histogramFamily(n)]:
		return histogramFamily(n)
	}
	return ""
}

// exportedFamilies scrapes url and returns the metric families that have
// at least one series, by name (histograms by their family name).
func exportedFamilies(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	out := map[string]bool{}
	types := map[string]string{}
	for _, line := range strings.Split(string(body), "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			types[name] = typ
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if f := histogramFamily(name); types[f] == "histogram" {
			name = f
		}
		out[name] = true
	}
	return out
}

// histogramFamily is n without a histogram series' suffix (_bucket, _sum,
// _count), or n.
func histogramFamily(n string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := strings.CutSuffix(n, suffix); ok {
			return f
		}
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
