package main

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// workload is the StatefulSet under check, with what its checks read:
// its pod and container, their volumes, claims and labels, and the
// mirror's settings as the container gets them.
type workload struct {
	sts       object
	pod, ctr  map[string]any
	podLabels map[string]any
	claims    map[string]map[string]any // volumeClaimTemplates by name
	volumes   map[string]map[string]any // pod volumes by name
	byKind    map[string][]object
	settings  map[string]string // variable name -> value
	// inConfigMaps: the settings given by the config file or envFrom
	// ConfigMaps (env may override them).
	inConfigMaps map[string]bool
}

// workload checks the StatefulSet against the ConfigMaps, Services,
// Secrets and NetworkPolicies it uses. secretsShown: every Secret mounted must be among the
// objects (the kustomize manifests' example; a chart may mount existing
// ones).
func (l *linter) workload(objs []object, secretsShown bool) {
	w, ok := l.findWorkload(objs)
	if !ok {
		return
	}
	w.settings = l.settings(w)
	if secretsShown {
		l.secretsShown(w)
	}
	l.ports(w)
	l.shutdown(w)
	l.cacheVolume(w)
	l.secretMounts(w)
	l.probes(w)
	l.podSecurity(w)
	l.replicas(w)
	l.peers(w, secretsShown)
	l.forwardProxy(w)
}

// findWorkload finds the one StatefulSet with its one container, and
// checks that its selector selects its pods.
func (l *linter) findWorkload(objs []object) (*workload, bool) {
	w := &workload{byKind: map[string][]object{}, claims: map[string]map[string]any{}, volumes: map[string]map[string]any{}}
	for _, o := range objs {
		w.byKind[o.kind()] = append(w.byKind[o.kind()], o)
	}
	if len(w.byKind["StatefulSet"]) != 1 {
		l.fail("want exactly one StatefulSet, found %d", len(w.byKind["StatefulSet"]))
		return nil, false
	}
	w.sts = w.byKind["StatefulSet"][0]
	w.pod, _ = get(w.sts.m, "spec", "template", "spec").(map[string]any)
	w.podLabels, _ = get(w.sts.m, "spec", "template", "metadata", "labels").(map[string]any)
	if str(w.podLabels, nameLabel) != appName {
		l.fail("%s: pod template label %s is not %q", w.sts, nameLabel, appName)
	}
	sel, _ := get(w.sts.m, "spec", "selector", "matchLabels").(map[string]any)
	if len(sel) == 0 || !subset(sel, w.podLabels) {
		l.fail("%s: selector.matchLabels %v does not select the pod labels %v", w.sts, sel, w.podLabels)
	}
	for _, c := range list(w.sts.m, "spec", "volumeClaimTemplates") {
		w.claims[str(c, "metadata", "name")] = c
		if str(c, "metadata", "labels", nameLabel) != appName {
			l.fail("%s: volumeClaimTemplate %s lacks label %s: %s", w.sts, str(c, "metadata", "name"), nameLabel, appName)
		}
	}
	for _, v := range list(w.pod, "volumes") {
		w.volumes[str(v, "name")] = v
	}
	containers := list(w.pod, "containers")
	if len(containers) != 1 {
		l.fail("%s: want one container, found %d", w.sts, len(containers))
		return nil, false
	}
	w.ctr = containers[0]
	return w, true
}

// configMap is the ConfigMap called name, or nil.
func (w *workload) configMap(name string) map[string]any {
	for _, cm := range w.byKind["ConfigMap"] {
		if cm.name() == name {
			return cm.m
		}
	}
	return nil
}

// settings reads the mirror's settings as the container gets them: the
// config file CONFIG_FILE names, then envFrom ConfigMaps, then env.
func (l *linter) settings(w *workload) map[string]string {
	settings := map[string]string{}
	env := map[string]string{}
	for _, e := range list(w.ctr, "env") {
		env[str(e, "name")] = str(e, "value")
	}
	if file, ok := env["CONFIG_FILE"]; ok {
		l.configFile(w, file, settings)
	}
	for _, ef := range list(w.ctr, "envFrom") {
		name := str(ef, "configMapRef", "name")
		cm := w.configMap(name)
		if cm == nil {
			l.fail("%s: envFrom names ConfigMap %q, which is not defined", w.sts, name)
			continue
		}
		data, _ := get(cm, "data").(map[string]any)
		for k, v := range data {
			settings[k] = fmt.Sprint(v)
		}
	}
	w.inConfigMaps = map[string]bool{}
	for k := range settings {
		w.inConfigMaps[k] = true
	}
	for k, v := range env {
		settings[k] = v
	}
	return settings
}

// configFile reads the config file at file, a key of a ConfigMap volume
// mounted in the container, into settings (keys upper-cased, lists
// joined with commas, mappings as key=value).
func (l *linter) configFile(w *workload, file string, settings map[string]string) {
	m, ok := w.mountOf(file)
	if !ok {
		l.fail("%s: CONFIG_FILE=%s is on no volume mount", w.sts, file)
		return
	}
	name := str(w.volumes[str(m, "name")], "configMap", "name")
	cm := w.configMap(name)
	if cm == nil {
		l.fail("%s: CONFIG_FILE=%s is on volume %s, not a ConfigMap of these objects", w.sts, file, str(m, "name"))
		return
	}
	key := path.Base(file)
	text, ok := get(cm, "data", key).(string)
	if !ok {
		l.fail("ConfigMap %s: no key %s (CONFIG_FILE=%s)", name, key, file)
		return
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		l.fail("ConfigMap %s: %s: %v", name, key, err)
		return
	}
	for k, v := range cfg {
		if strings.ToLower(k) != k {
			l.fail("ConfigMap %s: %s: key %q is not lower case", name, key, k)
		}
		settings[strings.ToUpper(k)] = settingValue(v)
	}
}

// settingValue writes a config file value as its environment variable.
func settingValue(v any) string {
	switch t := v.(type) {
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	case map[string]any:
		var parts []string
		for k, e := range t {
			parts = append(parts, k+"="+fmt.Sprint(e))
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

// secretsShown checks that every Secret volume's Secret is among the
// objects.
func (l *linter) secretsShown(w *workload) {
	secrets := map[string]bool{}
	for _, s := range w.byKind["Secret"] {
		secrets[s.name()] = true
	}
	for name, v := range w.volumes {
		if s := str(v, "secret", "secretName"); s != "" && !secrets[s] {
			l.fail("%s: volume %s mounts Secret %s, which %s does not show", w.sts, name, s, secretsExample)
		}
	}
}

// containerPorts are the container's ports by name.
func (w *workload) containerPorts() map[string]float64 {
	ports := map[string]float64{}
	for _, p := range list(w.ctr, "ports") {
		ports[str(p, "name")], _ = get(p, "containerPort").(float64)
	}
	return ports
}

// ports checks that Services select the pods and target named container
// ports, and that the listen addresses are those ports.
func (l *linter) ports(w *workload) {
	ports := w.containerPorts()
	for _, svc := range w.byKind["Service"] {
		ssel, _ := get(svc.m, "spec", "selector").(map[string]any)
		if len(ssel) == 0 || !subset(ssel, w.podLabels) {
			l.fail("%s: selector %v does not select the pods %v", svc, ssel, w.podLabels)
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
		addr, ok := w.settings[setting]
		if !ok {
			if _, declared := ports[portName]; declared && setting == "METRICS_ADDR" {
				l.fail("%s: container port %q but METRICS_ADDR is not set", w.sts, portName)
			}
			continue
		}
		_, p, _ := strings.Cut(addr, ":")
		if n, err := strconv.Atoi(p); err != nil || float64(n) != ports[portName] {
			l.fail("%s: %s=%s but container port %q is %v", w.sts, setting, addr, portName, ports[portName])
		}
	}
}

// shutdown checks that the preStop sleep and SHUTDOWN_GRACE end before
// the kubelet's SIGKILL.
func (l *linter) shutdown(w *workload) {
	grace, _ := get(w.pod, "terminationGracePeriodSeconds").(float64)
	if grace == 0 {
		grace = 30 // the Kubernetes default
	}
	sleep, _ := get(w.ctr, "lifecycle", "preStop", "sleep", "seconds").(float64)
	g, ok := w.settings["SHUTDOWN_GRACE"]
	if !ok {
		g = "30s" // the mirror's default
	}
	d, err := time.ParseDuration(g)
	if err != nil {
		l.fail("SHUTDOWN_GRACE=%q: %v", g, err)
	} else if need := d.Seconds() + sleep; need >= grace {
		l.fail("%s: terminationGracePeriodSeconds %v is not above preStop sleep %vs + SHUTDOWN_GRACE %v", w.sts, grace, sleep, d)
	}
}

// mountOf is the container's volume mount that holds path (the deepest).
func (w *workload) mountOf(path string) (map[string]any, bool) {
	var best map[string]any
	for _, m := range list(w.ctr, "volumeMounts") {
		mp := strings.TrimSuffix(str(m, "mountPath"), "/")
		if path == mp || strings.HasPrefix(path, mp+"/") {
			if best == nil || len(mp) > len(str(best, "mountPath")) {
				best = m
			}
		}
	}
	return best, best != nil
}

// cacheVolume checks that CACHE_DIR is a claim template's volume and that
// CACHE_MAX_SIZE leaves at least 5% of it free.
func (l *linter) cacheVolume(w *workload) {
	cacheDir := w.settings["CACHE_DIR"]
	if cacheDir == "" {
		cacheDir = "/var/lib/ecr-mirror" // the mirror's default
	}
	m, ok := w.mountOf(cacheDir)
	if !ok || str(m, "mountPath") != cacheDir {
		l.fail("%s: CACHE_DIR %s is not a volume mount", w.sts, cacheDir)
		return
	}
	claim, ok := w.claims[str(m, "name")]
	if !ok {
		l.fail("%s: CACHE_DIR %s is mounted from %s, not a volumeClaimTemplate", w.sts, cacheDir, str(m, "name"))
		return
	}
	storage := str(claim, "spec", "resources", "requests", "storage")
	size, err := quantity(storage)
	if err != nil {
		l.fail("%s: cache claim size %q: %v", w.sts, storage, err)
		return
	}
	max, err := cacheSize(w.settings["CACHE_MAX_SIZE"])
	if err != nil {
		l.fail("CACHE_MAX_SIZE %q: %v", w.settings["CACHE_MAX_SIZE"], err)
	} else if max > size*0.95 {
		l.fail("CACHE_MAX_SIZE %s (%.0f bytes) leaves under 5%% of the %s cache volume (%.0f bytes) for the index, temp files and filesystem",
			w.settings["CACHE_MAX_SIZE"], max, storage, size)
	}
}

// secretMounts checks that the TLS and htpasswd files lie in whole
// Secret volumes (no subPath, so a renewed Secret reaches the pod).
func (l *linter) secretMounts(w *workload) {
	for _, s := range []string{"TLS_CERTIFICATE", "TLS_PRIVATE_KEY", "HTPASSWD_FILE"} {
		path, ok := w.settings[s]
		if !ok || path == "" {
			continue
		}
		m, ok := w.mountOf(path)
		if !ok {
			l.fail("%s: %s=%s is on no volume mount", w.sts, s, path)
			continue
		}
		if v := w.volumes[str(m, "name")]; get(v, "secret") == nil {
			l.fail("%s: %s=%s is on volume %s, not a Secret volume", w.sts, s, path, str(m, "name"))
		} else if str(m, "subPath") != "" {
			l.fail("%s: %s is mounted with subPath, so a renewed Secret never reaches the pod", w.sts, s)
		}
	}
}

// probes checks that probes speak TLS exactly when the mirror does on
// their port (the metrics port is always plain HTTP), and ask the right
// paths: starting is not waiting for ECR, so an offline edge pod is never
// restarted for it.
func (l *linter) probes(w *workload) {
	ports := w.containerPorts()
	for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
		hg, ok := get(w.ctr, probe, "httpGet").(map[string]any)
		if !ok {
			l.fail("%s: no %s.httpGet", w.sts, probe)
			continue
		}
		want, why := "HTTP", "METRICS_ADDR's port is plain HTTP"
		if port := get(hg, "port"); port != "metrics" && port != ports["metrics"] {
			if w.settings["TLS_CERTIFICATE"] != "" {
				want = "HTTPS"
			}
			why = fmt.Sprintf("TLS_CERTIFICATE is %q", w.settings["TLS_CERTIFICATE"])
		}
		scheme := str(hg, "scheme")
		if scheme == "" {
			scheme = "HTTP"
		}
		if scheme != want {
			l.fail("%s: %s scheme is %s, want %s (%s)", w.sts, probe, scheme, want, why)
		}
		wantPath := map[string]string{"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}[probe]
		if p := str(hg, "path"); p != wantPath {
			l.fail("%s: %s path is %s, want %s", w.sts, probe, p, wantPath)
		}
	}
}

// podSecurity checks what the Pod Security "restricted" level demands,
// and the read-only root filesystem the mirror runs with: non-root, no
// privilege escalation, no capabilities, the RuntimeDefault seccomp
// profile (on the pod or the container).
func (l *linter) podSecurity(w *workload) {
	psc, _ := get(w.pod, "securityContext").(map[string]any)
	csc, _ := get(w.ctr, "securityContext").(map[string]any)
	either := func(path ...string) any {
		if v := get(csc, path...); v != nil {
			return v
		}
		return get(psc, path...)
	}
	checks := []struct {
		ok   bool
		what string
	}{
		{either("runAsNonRoot") == true, "runAsNonRoot: true"},
		{get(csc, "allowPrivilegeEscalation") == false, "allowPrivilegeEscalation: false"},
		{get(csc, "readOnlyRootFilesystem") == true, "readOnlyRootFilesystem: true"},
		{either("seccompProfile", "type") == "RuntimeDefault", "seccompProfile RuntimeDefault"},
		{fmt.Sprint(get(csc, "capabilities", "drop")) == "[ALL]", "capabilities: drop: [ALL]"},
	}
	for _, c := range checks {
		if !c.ok {
			l.fail("%s: the container does not run with %s", w.sts, c.what)
		}
	}
}
