package main

// The dashboard command: every query of a Grafana dashboard parses as
// PromQL once Grafana's variables are replaced as Grafana would
// ($__rate_interval and $__range by durations, other variables by a
// regexp), and every panel has a title, a place on the 24-column grid and
// queries against the dashboard's data source variable.

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string `json:"title"`
	GridPos struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []target `json:"targets"`
}

// target is one query of a panel.
type target struct {
	Expr       string `json:"expr"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
}

// grafanaVars are Grafana's built-in variables with a stand-in value;
// any other $variable becomes a regexp that matches all.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "6h")

var dashboardVar = regexp.MustCompile(`\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?`)

func runDashboard(args []string) error {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("dashboard: name the dashboard JSON files")
	}
	l := &linter{}
	queries := 0
	for _, file := range fs.Args() {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			return fmt.Errorf("dashboard: %s: %w", file, err)
		}
		queries += l.dashboard(file, d)
	}
	for _, p := range l.problems {
		fmt.Fprintln(os.Stderr, "dashboard:", p)
	}
	if len(l.problems) > 0 {
		return fmt.Errorf("dashboard: %d problem(s)", len(l.problems))
	}
	fmt.Printf("dashboard: %d queries parse; every panel is placed and titled\n", queries)
	return nil
}

// dashboard checks d's panels and returns how many queries it holds.
func (l *linter) dashboard(file string, d dashboard) int {
	if d.UID == "" {
		l.fail("%s: no uid (imports would duplicate it)", file)
	}
	if len(d.Panels) == 0 {
		l.fail("%s: no panels", file)
	}
	p := parser.NewParser(parser.Options{})
	n := 0
	for i, pn := range d.Panels {
		where := fmt.Sprintf("%s: panel %d %q", file, i+1, pn.Title)
		g := pn.GridPos
		switch {
		case pn.Title == "":
			l.fail("%s: no title", where)
		case g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24:
			l.fail("%s: gridPos %+v is off the 24-column grid", where, g)
		case len(pn.Targets) == 0:
			l.fail("%s: no queries", where)
		}
		for j, t := range pn.Targets {
			n++
			if t.Datasource.UID != "${datasource}" {
				l.fail("%s: query %d: data source %q, want the dashboard's ${datasource}", where, j+1, t.Datasource.UID)
			}
			expr := dashboardVar.ReplaceAllString(grafanaVars.Replace(t.Expr), ".*")
			if _, err := p.ParseExpr(expr); err != nil {
				l.fail("%s: query %d: %v", where, j+1, err)
			}
		}
	}
	return n
}
