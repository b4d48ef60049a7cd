package main

// The rules command: what the PrometheusRule schema cannot check in
// alerting rules. For each PrometheusRule in the files given:
//   - every expr parses as PromQL (Prometheus' own parser);
//   - every alert has a for:, a severity label (critical or warning), and
//     summary and description annotations that parse as Go templates (as
//     Prometheus expands them);
//   - alert names are unique.
// promtool would check the same and more, but is a large build; its
// parser alone is a small one.

import (
	"flag"
	"fmt"
	"os"
	"text/template"

	"github.com/prometheus/prometheus/promql/parser"
)

func runRules(args []string) error {
	fs := flag.NewFlagSet("rules", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("rules: name the files of PrometheusRule objects")
	}
	l := &linter{}
	alerts := 0
	for _, file := range fs.Args() {
		objs, err := readObjects(file)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if str(o, "kind") != "PrometheusRule" {
				continue
			}
			alerts += l.ruleGroups(file, o)
		}
	}
	for _, p := range l.problems {
		fmt.Fprintln(os.Stderr, "rules:", p)
	}
	if len(l.problems) > 0 {
		return fmt.Errorf("rules: %d problem(s)", len(l.problems))
	}
	if alerts == 0 {
		return fmt.Errorf("rules: no alerts in %v", fs.Args())
	}
	fmt.Printf("rules: %d alerts parse and carry for, severity, summary and description\n", alerts)
	return nil
}

// ruleGroups checks the rules of one PrometheusRule and returns how many
// alerts it holds.
func (l *linter) ruleGroups(file string, rule map[string]any) int {
	p := parser.NewParser(parser.Options{})
	seen := map[string]bool{}
	n := 0
	for _, g := range list(rule, "spec", "groups") {
		for i, r := range list(g, "rules") {
			name := str(r, "alert")
			if name == "" {
				name = fmt.Sprintf("%s rule %d", str(g, "name"), i+1)
			}
			where := fmt.Sprintf("%s: %s", file, name)
			if _, err := p.ParseExpr(str(r, "expr")); err != nil {
				l.fail("%s: expr: %v", where, err)
			}
			if str(r, "alert") == "" {
				continue
			}
			n++
			if seen[name] {
				l.fail("%s: a second alert of that name", where)
			}
			seen[name] = true
			l.alert(where, r)
		}
	}
	return n
}

// alert checks an alerting rule's for, severity and annotations.
func (l *linter) alert(where string, r map[string]any) {
	if str(r, "for") == "" {
		l.fail("%s: no for: (an alert that fires on one evaluation pages on every blip)", where)
	}
	if s := str(r, "labels", "severity"); s != "critical" && s != "warning" {
		l.fail("%s: severity label %q, want critical or warning", where, s)
	}
	// Prometheus' template functions the annotations may use; their
	// bodies do not matter for parsing.
	funcs := template.FuncMap{}
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp", "printf", "query", "first", "value", "label", "title", "toUpper", "toLower", "reReplaceAll", "match", "safeHtml", "externalURL", "pathPrefix"} {
		funcs[f] = func(...any) any { return nil }
	}
	for _, a := range []string{"summary", "description"} {
		text := str(r, "annotations", a)
		if text == "" {
			l.fail("%s: no %s annotation", where, a)
			continue
		}
		const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}"
		if _, err := template.New(a).Funcs(funcs).Parse(defs + text); err != nil {
			l.fail("%s: %s annotation: %v", where, a, err)
		}
	}
}
