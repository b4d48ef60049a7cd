package settings

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// sdkVariables are the AWS SDK's own variables the migration guide names:
// ecr-mirror accepts them through the SDK, not its settings.
var sdkVariables = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}

// variableRE is a variable in backquotes.
var variableRE = regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")

// guideVariables are the variables named in the first two columns (the
// seed's and ecr-mirror's) of the Markdown tables in text.
func guideVariables(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		cols := strings.Split(line, "|")
		if !strings.HasPrefix(line, "|") || len(cols) < 4 {
			continue
		}
		for _, m := range variableRE.FindAllStringSubmatch(cols[1]+"|"+cols[2], -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// accepted reports whether ecr-mirror reads the variable: one of its
// settings, a seed variable (aliases.go), or the AWS SDK's.
func accepted(v string) bool {
	for _, s := range settings(&Config{}) {
		if v == s.env || v == s.fallbackEnv {
			return true
		}
	}
	for _, a := range aliases {
		if slices.Contains(a.vars, v) {
			return true
		}
	}
	return slices.Contains(sdkVariables, v)
}

// Every variable docs/migrating.md's tables name is one ecr-mirror
// accepts, and every seed variable ecr-mirror accepts is in a table, so
// the guide cannot drift from the code.
func TestMigrationGuideNamesOnlyAcceptedVariables(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../docs/migrating.md")
	if err != nil {
		t.Fatal(err)
	}
	named := guideVariables(string(data))
	if len(named) < 20 {
		t.Fatalf("found only %d variables in the guide's tables: %v", len(named), named)
	}
	for _, v := range named {
		if !accepted(v) {
			t.Errorf("docs/migrating.md names %s, which ecr-mirror does not accept", v)
		}
	}
	for _, a := range aliases {
		for _, v := range a.vars {
			if !slices.Contains(named, v) {
				t.Errorf("seed variable %s (%s) is missing from docs/migrating.md's tables", v, a.seed)
			}
		}
	}
}

// The check reads the first two columns only, and finds a name that is
// not accepted.
func TestGuideVariablesReadsTheNameColumns(t *testing.T) {
	t.Parallel()
	text := "| theirs | ours | meaning | notes |\n|---|---|---|---|\n| `CACHE_TTL` | `CACHE_MAX_SIZE` | x | `DEBUG` |\n"
	got := guideVariables(text)
	if !slices.Equal(got, []string{"CACHE_TTL", "CACHE_MAX_SIZE"}) {
		t.Fatalf("got %v", got)
	}
	if accepted("CACHE_TTL") || !accepted("CACHE_MAX_SIZE") || !accepted("LISTEN_PORT") || !accepted("AWS_DEFAULT_REGION") {
		t.Fatal("accepted is wrong")
	}
}
