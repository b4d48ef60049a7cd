package settings

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

// updateREADME rewrites README.md's settings table instead of checking it:
// go generate ./cmd/ecr-mirror (the directive is in its doc.go) or
// go generate ./internal/settings runs this test with it.
var updateREADME = flag.Bool("update-readme", false, "rewrite README.md's settings table from settings()")

// The settings table sits between these lines in README.md.
const (
	tableStart = "<!-- settings table: generated from internal/settings/settings.go by `go generate ./cmd/ecr-mirror`; edit it there -->\n"
	tableEnd   = "<!-- end of settings table -->\n"
)

// settingsTable renders README.md's settings table, one row per setting.
func settingsTable(all []*setting) string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	for _, s := range all {
		def := s.docDefault
		switch {
		case def != "":
		case s.def != "":
			def = "`" + s.def + "`"
		default:
			def = "(none)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", s.env, def, s.doc)
	}
	return b.String()
}

// README.md's settings table is settings() rendered: a setting added,
// renamed or given another default shows up there or this test fails.
func TestREADMESettingsTableMatchesSettings(t *testing.T) {
	const path = "../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok := strings.Cut(string(readme), tableStart)
	table, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok || !ok2 {
		t.Fatalf("%s has no settings table between %q and %q", path, tableStart, tableEnd)
	}
	want := settingsTable(settings(&Config{}))
	if *updateREADME {
		if err := os.WriteFile(path, []byte(before+tableStart+want+tableEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, wantLines := strings.Split(table, "\n"), strings.Split(want, "\n")
	for i := range max(len(got), len(wantLines)) {
		g, w := line(got, i), line(wantLines, i)
		if g != w {
			t.Fatalf("%s's settings table differs from settings() at row %d:\n README:     %s\n settings(): %s\nrun go generate ./cmd/ecr-mirror to rewrite it", path, i+1, g, w)
		}
	}
}

// line is lines[i], or "(no line)" past the end.
func line(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(no line)"
}

// Every setting has a flag, a variable, help and a README meaning, none
// of them shared, and its default is a valid value.
func TestSettingsAreComplete(t *testing.T) {
	t.Parallel()
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, s := range settings(&Config{}) {
		t.Run(s.env, func(t *testing.T) {
			if s.env == "" || s.arg == "" || s.help == "" || s.doc == "" || s.parse == nil {
				t.Fatalf("incomplete: %+v", *s)
			}
			names := append([]string{s.flagName()}, s.aliases...)
			for _, f := range names {
				if flags[f] {
					t.Fatalf("flag -%s listed twice", f)
				}
				flags[f] = true
			}
			if envs[s.env] {
				t.Fatalf("variable %s listed twice", s.env)
			}
			envs[s.env] = true
			if s.def == "" {
				return
			}
			if err := s.parse(s.def); err != nil {
				t.Fatalf("default %q: %v", s.def, err)
			}
		})
	}
}

// README.md's Settings section says what the help does: where the
// settings are listed, how flags and file keys are named, and the
// deprecated flag names still accepted.
func TestREADMESettingsTextMatchesHelp(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section, _, _ := strings.Cut(string(readme)[strings.Index(string(readme), "## Settings"):], tableStart)
	want := []string{"`ecr-mirror serve --help`", "`-push`"}
	for _, s := range settings(&Config{}) {
		for _, a := range s.aliases {
			want = append(want, "`-"+a+"`")
		}
		switch s.env {
		case "CACHE_MAX_SIZE":
			want = append(want, "`-"+s.flagName()+"`", "(`"+s.fileKey()+"`)")
		case "AWS_REGION":
			want = append(want, "`-"+s.flagName()+"`")
		}
	}
	for _, w := range want {
		if !strings.Contains(section, w) {
			t.Errorf("README.md's Settings section does not say %s", w)
		}
	}
}
