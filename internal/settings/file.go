package settings

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// shape is how a setting may be written in a config file besides a
// scalar written as in its variable.
type shape int

const (
	scalar shape = iota
	list         // a sequence of items, joined with commas
	pairs        // a mapping of key: value, joined as key=value,...
	rules        // a sequence of access rules, joined with "; "
)

// configFileEnv is the setting that names the config file.
const configFileEnv = "CONFIG_FILE"

// maxConfigSize guards against pointing CONFIG_FILE at a huge file.
const maxConfigSize = 1 << 20

// fileValue is one setting as a config file gives it.
type fileValue struct {
	value string
	line  int
}

// configFile is a config file's settings, by variable.
type configFile struct {
	path   string
	values map[string]fileValue
}

// readConfigFile reads the YAML config file at path. Every unknown key
// and badly shaped value is reported with its line; the values that
// read well are returned beside them.
func readConfigFile(path string, all []*setting) (*configFile, []error) {
	cf := &configFile{path: path, values: map[string]fileValue{}}
	data, err := readLimited(path)
	if err != nil {
		return cf, []error{fmt.Errorf("CONFIG_FILE: %w", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return cf, []error{fmt.Errorf("%s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	if len(doc.Content) == 0 {
		return cf, nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return cf, []error{fmt.Errorf("%s:%d: want a mapping of settings (cache_max_size: 75g, ...)", path, root.Line)}
	}
	byKey := map[string]*setting{}
	for _, s := range all {
		byKey[s.fileKey()] = s
	}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		if err := cf.add(root.Content[i], root.Content[i+1], byKey); err != nil {
			errs = append(errs, err)
		}
	}
	return cf, errs
}

// add reads one key and its value.
func (cf *configFile) add(k, v *yaml.Node, byKey map[string]*setting) error {
	at := fmt.Sprintf("%s:%d", cf.path, k.Line)
	s, ok := byKey[k.Value]
	switch {
	case k.Kind != yaml.ScalarNode:
		return fmt.Errorf("%s: a key must be a setting's name", at)
	case !ok:
		if s, ok := byKey[strings.ToLower(strings.ReplaceAll(k.Value, "-", "_"))]; ok {
			return fmt.Errorf("%s: unknown setting %q: did you mean %s?", at, k.Value, s.fileKey())
		}
		return fmt.Errorf("%s: unknown setting %q (keys are the settings' variables in lower case, e.g. cache_max_size)", at, k.Value)
	case s.env == configFileEnv:
		return fmt.Errorf("%s: config_file: is given by CONFIG_FILE or -config-file, not in the file", at)
	}
	if prev, dup := cf.values[s.env]; dup {
		return fmt.Errorf("%s: %s: set again (first on line %d)", at, k.Value, prev.line)
	}
	value, err := nodeValue(s, v)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", at, k.Value, err)
	}
	cf.values[s.env] = fileValue{value: strings.TrimSpace(value), line: k.Line}
	return nil
}

// nodeValue is v written as s's variable would be.
func nodeValue(s *setting, v *yaml.Node) (string, error) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	switch {
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
		return "", nil
	case v.Kind == yaml.ScalarNode:
		return v.Value, nil
	case v.Kind == yaml.SequenceNode && (s.shape == list || s.shape == rules):
		return joinItems(s, v)
	case v.Kind == yaml.MappingNode && s.shape == pairs:
		return joinPairs(v)
	case s.shape == list || s.shape == rules:
		return "", errors.New("want a value or a list of values")
	case s.shape == pairs:
		return "", errors.New("want a value or a mapping (key: value)")
	}
	return "", errors.New("want a single value, not a list or mapping")
}

// joinItems joins a sequence's items as the variable separates them.
func joinItems(s *setting, v *yaml.Node) (string, error) {
	sep, bad := ",", ","
	if s.shape == rules {
		sep, bad = "; ", ";\n"
	}
	items := make([]string, 0, len(v.Content))
	for _, item := range v.Content {
		if item.Kind != yaml.ScalarNode {
			return "", fmt.Errorf("line %d: want a single value per item", item.Line)
		}
		if strings.ContainsAny(item.Value, bad) {
			return "", fmt.Errorf("line %d: item %q holds a separator: give one item per entry", item.Line, item.Value)
		}
		items = append(items, item.Value)
	}
	return strings.Join(items, sep), nil
}

// joinPairs joins a mapping as key=value,key=value.
func joinPairs(v *yaml.Node) (string, error) {
	items := make([]string, 0, len(v.Content)/2)
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if k.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode {
			return "", fmt.Errorf("line %d: want key: value", k.Line)
		}
		if strings.ContainsAny(k.Value+val.Value, ",=") {
			return "", fmt.Errorf("line %d: %q: %q holds a separator (, or =)", k.Line, k.Value, val.Value)
		}
		items = append(items, k.Value+"="+val.Value)
	}
	return strings.Join(items, ","), nil
}

// readLimited reads a file of at most maxConfigSize bytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("%s: larger than %d KiB", path, maxConfigSize>>10)
	}
	return data, nil
}

// WithConfigFile is getenv with CONFIG_FILE set to path ("config check
// FILE" checks that file whatever the environment names).
func WithConfigFile(getenv func(string) string, path string) func(string) string {
	return func(env string) string {
		if env == configFileEnv {
			return path
		}
		return getenv(env)
	}
}
