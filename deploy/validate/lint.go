package main

// The lint command: what a schema cannot see. It reads every manifest in the
// directory and checks that the objects agree with each other and with the
// mirror's settings:
//   - every object (and the pod template and claim templates) carries
//     app.kubernetes.io/name: ecr-mirror, and lives in the Namespace defined;
//   - kustomization.yaml lists every manifest but secrets-example.yaml;
//   - the StatefulSet's selector matches its pod labels, the Service selects
//     those pods, and Service target ports name container ports;
//   - SHUTDOWN_GRACE plus the preStop sleep fits in
//     terminationGracePeriodSeconds;
//   - CACHE_MAX_SIZE leaves at least 5% of the cache volume free;
//   - the TLS and htpasswd paths lie in mounted Secret volumes whose Secrets
//     secrets-example.yaml shows, and probe schemes match the TLS setting;
//   - the startup probe is /healthz (not waiting for ECR), readiness
//     /readyz, liveness /healthz.

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

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
	dir := fs.String("dir", "", "directory of Kubernetes manifests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("lint: -dir is required")
	}
	files, err := manifestFiles(*dir)
	if err != nil {
		return err
	}
	var objs []object
	for _, f := range files {
		o, err := readObjects(filepath.Join(*dir, f))
		if err != nil {
			return err
		}
		for _, m := range o {
			objs = append(objs, object{f, m})
		}
	}

	l := &linter{}
	l.kustomization(*dir, files)
	l.labelsAndNamespaces(objs)
	l.workload(objs)
	for _, p := range l.problems {
		fmt.Fprintln(os.Stderr, "lint:", p)
	}
	if len(l.problems) > 0 {
		return fmt.Errorf("lint: %d problem(s) in %s", len(l.problems), *dir)
	}
	fmt.Printf("lint: %d objects in %d files agree with each other and the settings\n", len(objs), len(files))
	return nil
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

func (l *linter) labelsAndNamespaces(objs []object) {
	namespace := ""
	for _, o := range objs {
		if o.kind() == "Namespace" {
			namespace = o.name()
		}
	}
	if namespace == "" {
		l.fail("no Namespace object")
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

// workload checks the StatefulSet against the ConfigMap, Services and
// Secrets it uses.
func (l *linter) workload(objs []object) {
	byKind := map[string][]object{}
	for _, o := range objs {
		byKind[o.kind()] = append(byKind[o.kind()], o)
	}
	if len(byKind["StatefulSet"]) != 1 {
		l.fail("want exactly one StatefulSet, found %d", len(byKind["StatefulSet"]))
		return
	}
	sts := byKind["StatefulSet"][0]
	pod, _ := get(sts.m, "spec", "template", "spec").(map[string]any)
	podLabels, _ := get(sts.m, "spec", "template", "metadata", "labels").(map[string]any)
	if str(podLabels, nameLabel) != appName {
		l.fail("%s: pod template label %s is not %q", sts, nameLabel, appName)
	}
	sel, _ := get(sts.m, "spec", "selector", "matchLabels").(map[string]any)
	if len(sel) == 0 || !subset(sel, podLabels) {
		l.fail("%s: selector.matchLabels %v does not select the pod labels %v", sts, sel, podLabels)
	}
	claims := map[string]map[string]any{}
	for _, c := range list(sts.m, "spec", "volumeClaimTemplates") {
		claims[str(c, "metadata", "name")] = c
		if str(c, "metadata", "labels", nameLabel) != appName {
			l.fail("%s: volumeClaimTemplate %s lacks label %s: %s", sts, str(c, "metadata", "name"), nameLabel, appName)
		}
	}
	volumes := map[string]map[string]any{}
	for _, v := range list(pod, "volumes") {
		volumes[str(v, "name")] = v
	}
	secrets := map[string]bool{}
	for _, s := range byKind["Secret"] {
		secrets[s.name()] = true
	}
	for name, v := range volumes {
		if s := str(v, "secret", "secretName"); s != "" && !secrets[s] {
			l.fail("%s: volume %s mounts Secret %s, which %s does not show", sts, name, s, secretsExample)
		}
	}

	containers := list(pod, "containers")
	if len(containers) != 1 {
		l.fail("%s: want one container, found %d", sts, len(containers))
		return
	}
	ctr := containers[0]
	settings := map[string]string{}
	for _, ef := range list(ctr, "envFrom") {
		name := str(ef, "configMapRef", "name")
		found := false
		for _, cm := range byKind["ConfigMap"] {
			if cm.name() == name {
				found = true
				data, _ := get(cm.m, "data").(map[string]any)
				for k, v := range data {
					settings[k] = fmt.Sprint(v)
				}
			}
		}
		if !found {
			l.fail("%s: envFrom names ConfigMap %q, which is not defined", sts, name)
		}
	}
	for _, e := range list(ctr, "env") {
		settings[str(e, "name")] = str(e, "value")
	}

	// Ports: Services select the pods and target named container ports.
	ports := map[string]float64{}
	for _, p := range list(ctr, "ports") {
		ports[str(p, "name")], _ = get(p, "containerPort").(float64)
	}
	for _, svc := range byKind["Service"] {
		ssel, _ := get(svc.m, "spec", "selector").(map[string]any)
		if len(ssel) == 0 || !subset(ssel, podLabels) {
			l.fail("%s: selector %v does not select the pods %v", svc, ssel, podLabels)
		}
		for _, p := range list(svc.m, "spec", "ports") {
			if t, ok := get(p, "targetPort").(string); ok {
				if _, ok := ports[t]; !ok {
					l.fail("%s: targetPort %q is not a container port name", svc, t)
				}
			}
		}
	}
	for setting, portName := range map[string]string{"LISTEN_ADDR": "registry", "METRICS_ADDR": "metrics"} {
		addr, ok := settings[setting]
		if !ok {
			continue
		}
		_, p, _ := strings.Cut(addr, ":")
		if n, err := strconv.Atoi(p); err != nil || float64(n) != ports[portName] {
			l.fail("%s: %s=%s but container port %q is %v", sts, setting, addr, portName, ports[portName])
		}
	}

	// Shutdown: preStop sleep + SHUTDOWN_GRACE must end before SIGKILL.
	grace, _ := get(pod, "terminationGracePeriodSeconds").(float64)
	if grace == 0 {
		grace = 30 // the Kubernetes default
	}
	sleep, _ := get(ctr, "lifecycle", "preStop", "sleep", "seconds").(float64)
	if g, ok := settings["SHUTDOWN_GRACE"]; ok {
		d, err := time.ParseDuration(g)
		if err != nil {
			l.fail("ConfigMap: SHUTDOWN_GRACE=%q: %v", g, err)
		} else if need := d.Seconds() + sleep; need >= grace {
			l.fail("%s: terminationGracePeriodSeconds %v is not above preStop sleep %vs + SHUTDOWN_GRACE %v", sts, grace, sleep, d)
		}
	}

	// Mounts: where each path setting lives.
	mountOf := func(path string) (map[string]any, bool) {
		var best map[string]any
		for _, m := range list(ctr, "volumeMounts") {
			mp := strings.TrimSuffix(str(m, "mountPath"), "/")
			if path == mp || strings.HasPrefix(path, mp+"/") {
				if best == nil || len(mp) > len(str(best, "mountPath")) {
					best = m
				}
			}
		}
		return best, best != nil
	}
	cacheDir := settings["CACHE_DIR"]
	if cacheDir == "" {
		cacheDir = "/var/lib/ecr-mirror" // the mirror's default
	}
	if m, ok := mountOf(cacheDir); !ok || str(m, "mountPath") != cacheDir {
		l.fail("%s: CACHE_DIR %s is not a volume mount", sts, cacheDir)
	} else if claim, ok := claims[str(m, "name")]; !ok {
		l.fail("%s: CACHE_DIR %s is mounted from %s, not a volumeClaimTemplate", sts, cacheDir, str(m, "name"))
	} else if size, err := quantity(str(claim, "spec", "resources", "requests", "storage")); err != nil {
		l.fail("%s: cache claim size: %v", sts, err)
	} else if max, err := cacheSize(settings["CACHE_MAX_SIZE"]); err != nil {
		l.fail("ConfigMap: CACHE_MAX_SIZE: %v", err)
	} else if max > size*0.95 {
		l.fail("CACHE_MAX_SIZE %s (%.0f bytes) leaves under 5%% of the %s cache volume (%.0f bytes) for the index, temp files and filesystem",
			settings["CACHE_MAX_SIZE"], max, str(claim, "spec", "resources", "requests", "storage"), size)
	}
	for _, s := range []string{"TLS_CERTIFICATE", "TLS_PRIVATE_KEY", "HTPASSWD_FILE"} {
		path, ok := settings[s]
		if !ok || path == "" {
			continue
		}
		m, ok := mountOf(path)
		if !ok {
			l.fail("%s: %s=%s is on no volume mount", sts, s, path)
			continue
		}
		if v := volumes[str(m, "name")]; get(v, "secret") == nil {
			l.fail("%s: %s=%s is on volume %s, not a Secret volume", sts, s, path, str(m, "name"))
		} else if str(m, "subPath") != "" {
			l.fail("%s: %s is mounted with subPath, so a renewed Secret never reaches the pod", sts, s)
		}
	}

	// Probes speak TLS exactly when the mirror does.
	want := "HTTP"
	if settings["TLS_CERTIFICATE"] != "" {
		want = "HTTPS"
	}
	for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
		hg, ok := get(ctr, probe, "httpGet").(map[string]any)
		if !ok {
			l.fail("%s: no %s.httpGet", sts, probe)
			continue
		}
		scheme := str(hg, "scheme")
		if scheme == "" {
			scheme = "HTTP"
		}
		if scheme != want {
			l.fail("%s: %s scheme is %s, want %s (TLS_CERTIFICATE is %q)", sts, probe, scheme, want, settings["TLS_CERTIFICATE"])
		}
		// Starting is not waiting for ECR: an offline edge pod must not
		// be restarted for it.
		wantPath := map[string]string{"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}[probe]
		if p := str(hg, "path"); p != wantPath {
			l.fail("%s: %s path is %s, want %s", sts, probe, p, wantPath)
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
