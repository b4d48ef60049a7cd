package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// No Docker engine runs the tests: these read the Dockerfile and
// .dockerignore at the module root, and run what they name.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct{ cmd, args string }

// dockerStages reads ../../Dockerfile into its stages' instructions.
func dockerStages(t *testing.T) [][]instruction {
	t.Helper()
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]instruction
	var line string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") || text == "" && line == "" {
			continue
		}
		if cont, ok := strings.CutSuffix(text, `\`); ok {
			line += cont + " "
			continue
		}
		line += text
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %s before FROM", in.cmd)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stages) != 2 {
		t.Fatalf("Dockerfile has %d stages, want the build and the image", len(stages))
	}
	return stages
}

// all returns the arguments of stage's instructions cmd.
func all(stage []instruction, cmd string) []string {
	var out []string
	for _, in := range stage {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// declares reports whether stage declares the build argument name.
func declares(stage []instruction, name string) bool {
	for _, args := range all(stage, "ARG") {
		for _, a := range strings.Fields(args) {
			if n, _, _ := strings.Cut(a, "="); n == name {
				return true
			}
		}
	}
	return false
}

// The build stage cross-compiles for the target platform, and its
// VERSION and COMMIT arguments reach the binary: built with the
// Dockerfile's own -ldflags, "ecr-mirror version" prints them.
func TestDockerfileBuildsForTheTargetWithVersionAndCommit(t *testing.T) {
	t.Parallel()
	build := dockerStages(t)[0]
	if from := build[0].args; !strings.Contains(from, "--platform=$BUILDPLATFORM") {
		t.Errorf("build stage FROM %s: want --platform=$BUILDPLATFORM (cross-compile, no emulation)", from)
	}
	for _, arg := range []string{"TARGETOS", "TARGETARCH", "VERSION", "COMMIT"} {
		if !declares(build, arg) {
			t.Errorf("build stage does not declare ARG %s", arg)
		}
	}
	run := strings.Join(all(build, "RUN"), "\n")
	for _, want := range []string{"GOOS=$TARGETOS", "GOARCH=$TARGETARCH", "CGO_ENABLED=0"} {
		if !strings.Contains(run, want) {
			t.Errorf("build stage RUN lacks %s", want)
		}
	}
	m := regexp.MustCompile(`-ldflags="([^"]*)"`).FindStringSubmatch(run)
	if m == nil {
		t.Fatalf("no -ldflags=\"...\" in the build stage:\n%s", run)
	}
	ldflags := strings.NewReplacer("${VERSION}", "v9.8.7-docker", "${COMMIT}", "0123abcd").Replace(m[1])
	if ldflags == m[1] || strings.Contains(ldflags, "$") {
		t.Fatalf("-ldflags %q: want ${VERSION} and ${COMMIT} in it, and no other variable", m[1])
	}
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "ecr-mirror")
	args := []string{"build", "-buildvcs=false", "-ldflags=" + ldflags, "-o", bin}
	if raceEnabled { // reuse the packages this test binary was built from
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags=%q: %v\n%s", ldflags, err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ecr-mirror v9.8.7-docker\ncommit:   0123abcd\n") {
		t.Fatalf("ecr-mirror --version built with the Dockerfile's -ldflags: %v\n%s", err, out)
	}
}

// The image says what it is (OCI labels from the same arguments), and
// its HEALTHCHECK runs the binary's healthcheck command, whose
// arguments pass against a running mirror.
func TestDockerImageLabelsAndHealthcheck(t *testing.T) {
	t.Parallel()
	image := dockerStages(t)[1]
	for _, arg := range []string{"VERSION", "COMMIT"} {
		if !declares(image, arg) {
			t.Errorf("image stage does not declare ARG %s: its label would be empty", arg)
		}
	}
	labels := strings.Join(all(image, "LABEL"), " ")
	for key, want := range map[string]string{
		"version": `"${VERSION}"`, "revision": `"${COMMIT}"`, "licenses": `"Apache-2.0"`,
		"source": `"${SOURCE}"`, "title": `"ecr-mirror"`, "description": `"`,
	} {
		if !strings.Contains(labels, "org.opencontainers.image."+key+"="+want) {
			t.Errorf("no label org.opencontainers.image.%s=%s... in %s", key, want, labels)
		}
	}
	var entry []string
	if err := json.Unmarshal([]byte(strings.Join(all(image, "ENTRYPOINT"), "")), &entry); err != nil || len(entry) != 1 {
		t.Fatalf("ENTRYPOINT %v: want one JSON array with the binary: %v", all(image, "ENTRYPOINT"), err)
	}
	if !slices.Contains(all(image, "COPY"), "--from=build /out/ecr-mirror "+entry[0]) {
		t.Errorf("the binary is not copied to the ENTRYPOINT %s", entry[0])
	}
	hc := strings.Join(all(image, "HEALTHCHECK"), "")
	_, cmd, ok := strings.Cut(hc, " CMD ")
	var argv []string
	if !ok || json.Unmarshal([]byte(cmd), &argv) != nil || len(argv) < 2 || argv[0] != entry[0] {
		t.Fatalf("HEALTHCHECK %q: want CMD [%q, \"healthcheck\", ...] in exec form (the image has no shell)", hc, entry[0])
	}
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{})
	// Its flags are parsed as written; a later -timeout waits longer, so
	// that a loaded machine's slowness cannot fail the test.
	if code, out, errOut := cli(t, healthEnv(fake, m, nil), append(argv[1:], slowOK...)...); code != exitOK {
		t.Fatalf("the HEALTHCHECK's command %q against a running mirror: exit %d\n%s%s", argv[1:], code, out, errOut)
	}
}

// .dockerignore keeps history, tests and tooling out of the build
// context, but never a file "go build ./cmd/ecr-mirror" reads.
func TestDockerBuildContextHoldsTheSources(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			if strings.HasPrefix(l, "!") || strings.Contains(strings.TrimPrefix(l, "**/"), "**") {
				t.Fatalf(".dockerignore %q: this test reads plain patterns and leading **/ only", l)
			}
			patterns = append(patterns, strings.TrimPrefix(l, "/"))
		}
	}
	for _, p := range []string{".git/HEAD", "cmd/ecr-mirror/cli_test.go", "testdata/x", "hack/demo.sh", "deploy/validate/main.go", ".ci/run", "proxy/proxy.test"} {
		if !ignored(patterns, p) {
			t.Errorf("%s is sent to the builder", p)
		}
	}
	out, err := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum", "LICENSE"} // COPY'd by name
	for _, f := range needed {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("the Dockerfile copies %s: %v", f, err)
		}
	}
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		needed = append(needed, filepath.ToSlash(rel))
	}
	if len(needed) < 20 {
		t.Fatalf("go list named %d files: %v", len(needed), needed)
	}
	for _, f := range needed {
		if ignored(patterns, f) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", f)
		}
	}
}

// ignored reports whether a .dockerignore pattern leaves out path: it
// matches the path or one of its directories (a leading **/ matches at
// any depth).
func ignored(patterns []string, path string) bool {
	parts := strings.Split(path, "/")
	for _, p := range patterns {
		rest, anyDepth := strings.CutPrefix(p, "**/")
		for end := 1; end <= len(parts); end++ {
			for start := 0; start < end && (start == 0 || anyDepth); start++ {
				if ok, _ := filepath.Match(rest, strings.Join(parts[start:end], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}
