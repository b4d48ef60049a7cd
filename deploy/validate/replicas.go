package main

import (
	"strconv"
	"strings"
)

// replicas checks what several replicas need: a shared bucket
// (SHARED_STORE), else each downloads every digest from ECR; and a
// PodDisruptionBudget that lets a node drain take them one at a time,
// never all at once and never none.
func (l *linter) replicas(w *workload) {
	n := 1.0 // the Kubernetes default
	if v, ok := get(w.sts.m, "spec", "replicas").(float64); ok {
		n = v
	}
	if n > 1 && w.settings["SHARED_STORE"] == "" {
		l.fail("%s: %v replicas but no SHARED_STORE: each would download every digest from ECR", w.sts, n)
	}
	budgets := 0
	for _, pdb := range w.byKind["PodDisruptionBudget"] {
		sel, _ := get(pdb.m, "spec", "selector", "matchLabels").(map[string]any)
		if len(sel) == 0 || !subset(sel, w.podLabels) {
			l.fail("%s: selector %v does not select the pods %v", pdb, sel, w.podLabels)
			continue
		}
		budgets++
		l.budget(pdb, n)
	}
	if n > 1 && budgets == 0 {
		l.fail("%s: %v replicas and no PodDisruptionBudget: a node drain may take them all at once", w.sts, n)
	}
}

// budget checks that pdb lets an eviction through with n replicas.
func (l *linter) budget(pdb object, n float64) {
	if v, ok := get(pdb.m, "spec", "minAvailable").(float64); ok && v >= n && n > 0 {
		l.fail("%s: minAvailable %v with %v replicas blocks every voluntary eviction (node drains hang)", pdb, v, n)
	}
	switch v := get(pdb.m, "spec", "maxUnavailable").(type) {
	case float64:
		if v == 0 {
			l.fail("%s: maxUnavailable 0 blocks every voluntary eviction (node drains hang)", pdb)
		}
	case string:
		if p, err := strconv.Atoi(strings.TrimSuffix(v, "%")); err == nil && p == 0 {
			l.fail("%s: maxUnavailable %s blocks every voluntary eviction (node drains hang)", pdb, v)
		}
	}
}
