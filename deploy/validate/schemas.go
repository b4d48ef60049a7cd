package main

// The schemas command: turn Kubernetes' published OpenAPI v3 documents
// (api/openapi-spec/v3/*.json in the k8s.io/kubernetes module) into the
// "standalone-strict" JSON schemas kubeconform reads, one file per kind, named
// as kubeconform's default schema location names them:
// {kind}-{group's first label}-{version}.json, or {kind}-{version}.json for
// the core group.
//
// Each file is a draft-04 schema (kubeconform's default draft) holding the
// kind's schema and, under "definitions", every type it reaches. Strict: an
// object with declared properties admits no others. As the API server does,
// an optional field may be null. The Prometheus Operator's ServiceMonitor
// and PrometheusRule, which no Kubernetes document holds, are added from
// monitoring.go.

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const refPrefix = "#/components/schemas/"

func runSchemas(args []string) error {
	fs := flag.NewFlagSet("schemas", flag.ContinueOnError)
	specDir := fs.String("spec", "", "directory of OpenAPI v3 documents (*_openapi.json)")
	outDir := fs.String("out", "", "directory to write the JSON schemas to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *specDir == "" || *outDir == "" {
		return fmt.Errorf("schemas: -spec and -out are required")
	}

	raw, err := readSpecs(*specDir)
	if err != nil {
		return err
	}
	if err := addMonitoringSchemas(raw); err != nil {
		return err
	}
	c := converter{raw: raw, done: map[string]map[string]any{}}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}

	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	written := map[string]string{}
	for _, name := range names {
		for _, gvk := range groupVersionKinds(raw[name]) {
			file := schemaFileName(gvk)
			if prev, dup := written[file]; dup {
				return fmt.Errorf("schemas: %s and %s both map to %s", prev, name, file)
			}
			written[file] = name
			data, err := json.Marshal(c.standalone(name, gvk))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(*outDir, file), data, 0o644); err != nil {
				return err
			}
		}
	}
	if len(written) == 0 {
		return fmt.Errorf("schemas: no kinds found in %s", *specDir)
	}
	fmt.Printf("wrote %d kind schemas (%d types) to %s\n", len(written), len(raw), *outDir)
	return nil
}

// readSpecs merges components.schemas of every OpenAPI v3 document in dir.
// A type appears in each group-version document that uses it, identically.
func readSpecs(dir string) (map[string]map[string]any, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_openapi.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("schemas: no *_openapi.json in %s", dir)
	}
	all := map[string]map[string]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Components struct {
				Schemas map[string]map[string]any `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", f, err)
		}
		for n, s := range doc.Components.Schemas {
			if _, ok := all[n]; !ok {
				all[n] = s
			}
		}
	}
	return all, nil
}

type gvk struct{ Group, Version, Kind string }

func (g gvk) apiVersion() string {
	if g.Group == "" {
		return g.Version
	}
	return g.Group + "/" + g.Version
}

func groupVersionKinds(s map[string]any) []gvk {
	list, _ := s["x-kubernetes-group-version-kind"].([]any)
	var out []gvk
	for _, e := range list {
		m, _ := e.(map[string]any)
		g, _ := m["group"].(string)
		v, _ := m["version"].(string)
		k, _ := m["kind"].(string)
		if v != "" && k != "" {
			out = append(out, gvk{g, v, k})
		}
	}
	return out
}

// schemaFileName follows kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json.
func schemaFileName(g gvk) string {
	suffix := "-" + strings.ToLower(g.Version)
	if g.Group != "" {
		suffix = "-" + strings.ToLower(strings.Split(g.Group, ".")[0]) + suffix
	}
	return strings.ToLower(g.Kind) + suffix + ".json"
}

type converter struct {
	raw  map[string]map[string]any
	done map[string]map[string]any // converted types, by name
}

func (c *converter) def(name string) map[string]any {
	if d, ok := c.done[name]; ok {
		return d
	}
	d := c.node(c.raw[name])
	c.done[name] = d
	return d
}

// node converts one OpenAPI schema object to JSON Schema draft-04: references
// point into "definitions"; descriptions, defaults and x-kubernetes-*
// extensions are dropped (validation does not use them).
func (c *converter) node(in map[string]any) map[string]any {
	out := map[string]any{}
	null := false
	for k, v := range in {
		switch {
		case k == "description" || k == "default" || k == "example" || strings.HasPrefix(k, "x-"):
		case k == "$ref":
			out[k] = "#/definitions/" + strings.TrimPrefix(v.(string), refPrefix)
		case k == "properties":
			out[k] = c.properties(v.(map[string]any), in["required"])
		case k == "items" || k == "additionalProperties" || k == "not":
			if m, ok := v.(map[string]any); ok {
				out[k] = c.node(m)
			} else {
				out[k] = v
			}
		case k == "allOf" || k == "anyOf" || k == "oneOf":
			var list []any
			for _, e := range v.([]any) {
				list = append(list, c.node(e.(map[string]any)))
			}
			out[k] = list
		case k == "nullable":
			null = v == true
		default:
			out[k] = v
		}
	}
	if _, has := out["properties"]; has {
		if _, set := out["additionalProperties"]; !set {
			out["additionalProperties"] = false
		}
	}
	out = unwrapRef(out)
	if null {
		c.allowNull(out)
	}
	return out
}

// properties converts an object's properties; those not in required may
// be null.
func (c *converter) properties(in map[string]any, required any) map[string]any {
	req := map[string]bool{}
	if r, ok := required.([]any); ok {
		for _, n := range r {
			req[n.(string)] = true
		}
	}
	props := map[string]any{}
	for pn, pv := range in {
		p := c.node(pv.(map[string]any))
		if !req[pn] {
			p = c.nullable(p)
		}
		props[pn] = p
	}
	return props
}

// unwrapRef drops the one-element allOf OpenAPI wraps a reference in to
// give it a description: without the description the wrapper only adds
// noise to error messages.
func unwrapRef(s map[string]any) map[string]any {
	if all, ok := s["allOf"].([]any); ok && len(s) == 1 && len(all) == 1 {
		if ref, ok := all[0].(map[string]any); ok && len(ref) == 1 && ref["$ref"] != nil {
			return ref
		}
	}
	return s
}

// nullable lets an optional field be null, as the API server does (it treats
// null as unset). Scalar types behind a reference (Time, Quantity,
// IntOrString) are inlined so they can take null too; references to object
// types stay strict.
func (c *converter) nullable(s map[string]any) map[string]any {
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		// Decided on the OpenAPI type: converting an object type here could
		// recurse without end (JSONSchemaProps refers to itself).
		if _, obj := c.raw[name]["properties"]; obj || c.raw[name]["type"] == "object" {
			return s // draft-04 ignores keywords beside $ref
		}
		s = clone(c.def(name))
	}
	c.allowNull(s)
	return s
}

func (c *converter) allowNull(s map[string]any) {
	switch t := s["type"].(type) {
	case string:
		s["type"] = []any{t, "null"}
	case nil:
		if one, ok := s["oneOf"].([]any); ok {
			s["oneOf"] = append(one, map[string]any{"type": "null"})
		}
	}
}

func clone(m map[string]any) map[string]any {
	data, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return out
}

// standalone is the schema file for one kind: its type, with apiVersion and
// kind pinned, and every type it reaches under "definitions".
func (c *converter) standalone(name string, g gvk) map[string]any {
	root := clone(c.def(name))
	props, _ := root["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
		root["properties"] = props
	}
	props["apiVersion"] = map[string]any{"type": "string", "enum": []any{g.apiVersion()}}
	props["kind"] = map[string]any{"type": "string", "enum": []any{g.Kind}}

	defs := map[string]any{}
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if ref, ok := t["$ref"].(string); ok {
				n := strings.TrimPrefix(ref, "#/definitions/")
				if _, seen := defs[n]; !seen {
					if _, known := c.raw[n]; !known {
						panic(fmt.Sprintf("schemas: %s refers to unknown type %s", name, n))
					}
					d := c.def(n)
					defs[n] = d
					walk(d)
				}
			}
			for _, e := range t {
				walk(e)
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(root)
	root["$schema"] = "http://json-schema.org/draft-04/schema#"
	if len(defs) > 0 {
		root["definitions"] = defs
	}
	return root
}
