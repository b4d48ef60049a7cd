package main

// The lint command: what a schema cannot see. It reads every manifest in a
// directory (-dir, the kustomize manifests) or one rendered file (-rendered,
// `helm template`'s output) and checks that the objects agree with each
// other and with the mirror's settings:
//   - every object (and the pod template and claim templates) carries
//     app.kubernetes.io/name: ecr-mirror, and lives in the Namespace defined
//     (-dir) or in one namespace (-rendered);
//   - kustomization.yaml lists every manifest but secrets-example.yaml (-dir);
//   - the settings are read as the mirror reads them: the config file named
//     by CONFIG_FILE (a ConfigMap key mounted in the pod), then envFrom
//     ConfigMaps and env over it;
//   - the StatefulSet's selector matches its pod labels, the Service selects
//     those pods, and Service target ports name container ports;
//   - SHUTDOWN_GRACE plus the preStop sleep fits in
//     terminationGracePeriodSeconds;
//   - CACHE_MAX_SIZE leaves at least 5% of the cache volume free;
//   - the TLS and htpasswd paths lie in mounted Secret volumes whose Secrets
//     secrets-example.yaml shows (-dir; a chart may use existing ones), and
//     probe schemes match the TLS setting (HTTP on the metrics port);
//   - the startup probe is /healthz (not waiting for ECR), readiness
//     /readyz, liveness /healthz;
//   - the container runs as Pod Security "restricted" demands, with a
//     read-only root filesystem;
//   - replicas (replicas.go): more than one share a bucket (SHARED_STORE)
//     and have a PodDisruptionBudget; no budget blocks every eviction;
//   - peers (peers.go): PEERS=dns:HOST:PORT names a headless Service
//     that selects the pods and exposes PORT on the container port
//     "peer", which is PEER_ADDR's; PEER_SECRET comes from a Secret's
//     key, never a ConfigMap or a literal; a NetworkPolicy opens the peer
//     port to the pods only; no peer port without PEERS.
//   - the forward proxy (forwardproxy.go): FORWARD_PROXY_ADDR's port is
//     the container port "forward-proxy", a Service routes it and every
//     NetworkPolicy admits it; FORWARD_PROXY_CA_DIR is a read-only Secret
//     volume with ca.crt and ca.key, required with several replicas; no
//     proxy port without FORWARD_PROXY_ADDR.

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

const (
	nameLabel = "app.kubernetes.io/name"
	appName   = "ecr-mirror"
	// The example Secrets, kept out of the kustomization.
	secretsExample = "secrets-example.yaml"
)

type object struct {
	file string
	m    map[string]any
}

func (o object) kind() string { return str(o.m, "kind") }
func (o object) name() string { return str(o.m, "metadata", "name") }
func (o object) String() string {
	return fmt.Sprintf("%s: %s/%s", o.file, o.kind(), o.name())
}

type linter struct{ problems []string }

func (l *linter) fail(format string, args ...any) {
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

func runLint(args []string) error {
	fs := flag.NewFlagSet("lint", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of Kubernetes manifests (kustomize)")
	rendered := fs.String("rendered", "", "file of rendered manifests (helm template)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*dir == "") == (*rendered == "") {
		return fmt.Errorf("lint: give one of -dir and -rendered")
	}
	objs, files, err := lintInput(*dir, *rendered)
	if err != nil {
		return err
	}
	l := &linter{}
	if *dir != "" {
		l.kustomization(*dir, files)
	}
	l.labelsAndNamespaces(objs, *dir != "")
	l.workload(objs, *dir != "")
	where := *dir + *rendered
	for _, p := range l.problems {
		fmt.Fprintln(os.Stderr, "lint:", p)
	}
	if len(l.problems) > 0 {
		return fmt.Errorf("lint: %d problem(s) in %s", len(l.problems), where)
	}
	fmt.Printf("lint: %d objects in %s agree with each other and the settings\n", len(objs), where)
	return nil
}

// lintInput reads the objects of dir's manifests, or of the rendered file.
func lintInput(dir, rendered string) (objs []object, files []string, err error) {
	if rendered != "" {
		ms, err := readObjects(rendered)
		if err != nil {
			return nil, nil, err
		}
		for _, m := range ms {
			objs = append(objs, object{filepath.Base(rendered), m})
		}
		return objs, []string{rendered}, nil
	}
	if files, err = manifestFiles(dir); err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		ms, err := readObjects(filepath.Join(dir, f))
		if err != nil {
			return nil, nil, err
		}
		for _, m := range ms {
			objs = append(objs, object{f, m})
		}
	}
	return objs, files, nil
}

// manifestFiles lists the YAML files in dir, kustomization.yaml excluded.
func manifestFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == "kustomization.yaml" || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

func readObjects(path string) ([]map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for i, doc := range docSeparator.Split(string(data), -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		if m != nil {
			out = append(out, m)
		}
	}
	return out, nil
}

func (l *linter) kustomization(dir string, files []string) {
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		l.fail("%v", err)
		return
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		l.fail("kustomization.yaml: %v", err)
		return
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		listed[r] = true
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			l.fail("kustomization.yaml lists %s, which does not exist", r)
		}
	}
	for _, f := range files {
		switch {
		case f == secretsExample && listed[f]:
			l.fail("kustomization.yaml must not list %s (example Secrets)", f)
		case f != secretsExample && !listed[f]:
			l.fail("kustomization.yaml does not list %s", f)
		}
	}
}

// labelsAndNamespaces checks every object's name label and namespace:
// the Namespace object's when one must be defined, else the first
// object's.
func (l *linter) labelsAndNamespaces(objs []object, wantNamespace bool) {
	namespace := ""
	for _, o := range objs {
		if o.kind() == "Namespace" {
			namespace = o.name()
		}
	}
	if namespace == "" && wantNamespace {
		l.fail("no Namespace object")
	}
	if namespace == "" && len(objs) > 0 {
		if namespace = str(objs[0].m, "metadata", "namespace"); namespace == "" {
			l.fail("%s: no namespace", objs[0])
		}
	}
	for _, o := range objs {
		if v := str(o.m, "metadata", "labels", nameLabel); v != appName {
			l.fail("%s: label %s is %q, want %q", o, nameLabel, v, appName)
		}
		if ns := str(o.m, "metadata", "namespace"); o.kind() != "Namespace" && ns != namespace {
			l.fail("%s: namespace is %q, want %q", o, ns, namespace)
		}
	}
}

// cacheSize parses a CACHE_MAX_SIZE value as the mirror does: bytes, or a
// number with k/m/g/t or KiB/MiB/GiB/TiB (powers of 1024).
func cacheSize(s string) (float64, error) {
	if s == "" {
		s = "75g" // the mirror's default
	}
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseFloat(s, 64)
}

// quantity parses a Kubernetes storage quantity (binary or decimal suffix).
func quantity(s string) (float64, error) {
	suffixes := []struct {
		suffix string
		mult   float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}}
	for _, u := range suffixes {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseFloat(s, 64)
}

func get(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

func str(m any, path ...string) string {
	s, _ := get(m, path...).(string)
	return s
}

func list(m any, path ...string) []map[string]any {
	var out []map[string]any
	l, _ := get(m, path...).([]any)
	for _, e := range l {
		if mm, ok := e.(map[string]any); ok {
			out = append(out, mm)
		}
	}
	return out
}

func subset(a, b map[string]any) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
