package main

// Schemas for the Prometheus Operator's kinds the chart renders
// (monitoring.coreos.com/v1 ServiceMonitor and PrometheusRule). They are
// CustomResourceDefinitions, so the Kubernetes OpenAPI documents do not
// hold them. Rather than download the operator's CRDs (a module of its
// own, and network on every new version), these minimal schemas are
// written here in the same OpenAPI form and converted with the rest:
// strict (no field beside those listed) over the fields the chart uses
// and their near neighbours, with the operator's names and types. A field
// the chart starts using must be added here first; PromQL itself is not
// checked (see validate.sh).

import (
	"encoding/json"
	"fmt"
)

const (
	objectMeta    = refPrefix + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
	labelSelector = refPrefix + "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
)

// monitoringSchemas are the kinds' OpenAPI schemas, by type name.
const monitoringSchemas = `{
  "com.coreos.monitoring.v1.PrometheusRule": {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "x-kubernetes-group-version-kind": [{"group": "monitoring.coreos.com", "version": "v1", "kind": "PrometheusRule"}],
    "properties": {
      "apiVersion": {"type": "string"},
      "kind": {"type": "string"},
      "metadata": {"$ref": "` + objectMeta + `"},
      "spec": {
        "type": "object",
        "required": ["groups"],
        "properties": {
          "groups": {"type": "array", "items": {"$ref": "` + refPrefix + `com.coreos.monitoring.v1.RuleGroup"}}
        }
      }
    }
  },
  "com.coreos.monitoring.v1.RuleGroup": {
    "type": "object",
    "required": ["name", "rules"],
    "properties": {
      "name": {"type": "string", "minLength": 1},
      "interval": {"type": "string", "pattern": "` + promDuration + `"},
      "limit": {"type": "integer"},
      "labels": {"type": "object", "additionalProperties": {"type": "string"}},
      "rules": {"type": "array", "items": {"$ref": "` + refPrefix + `com.coreos.monitoring.v1.Rule"}}
    }
  },
  "com.coreos.monitoring.v1.Rule": {
    "type": "object",
    "required": ["expr"],
    "properties": {
      "alert": {"type": "string", "minLength": 1},
      "record": {"type": "string", "minLength": 1},
      "expr": {"type": "string", "minLength": 1},
      "for": {"type": "string", "pattern": "` + promDuration + `"},
      "keep_firing_for": {"type": "string", "pattern": "` + promDuration + `"},
      "labels": {"type": "object", "additionalProperties": {"type": "string"}},
      "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
    }
  },
  "com.coreos.monitoring.v1.ServiceMonitor": {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "x-kubernetes-group-version-kind": [{"group": "monitoring.coreos.com", "version": "v1", "kind": "ServiceMonitor"}],
    "properties": {
      "apiVersion": {"type": "string"},
      "kind": {"type": "string"},
      "metadata": {"$ref": "` + objectMeta + `"},
      "spec": {
        "type": "object",
        "required": ["selector", "endpoints"],
        "properties": {
          "selector": {"$ref": "` + labelSelector + `"},
          "namespaceSelector": {"type": "object", "properties": {
            "any": {"type": "boolean"},
            "matchNames": {"type": "array", "items": {"type": "string"}}}},
          "jobLabel": {"type": "string"},
          "targetLabels": {"type": "array", "items": {"type": "string"}},
          "podTargetLabels": {"type": "array", "items": {"type": "string"}},
          "sampleLimit": {"type": "integer"},
          "endpoints": {"type": "array", "items": {"$ref": "` + refPrefix + `com.coreos.monitoring.v1.Endpoint"}}
        }
      }
    }
  },
  "com.coreos.monitoring.v1.Endpoint": {
    "type": "object",
    "properties": {
      "port": {"type": "string"},
      "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
      "path": {"type": "string"},
      "scheme": {"type": "string", "enum": ["http", "https", "HTTP", "HTTPS"]},
      "interval": {"type": "string", "pattern": "` + promDuration + `"},
      "scrapeTimeout": {"type": "string", "pattern": "` + promDuration + `"},
      "honorLabels": {"type": "boolean"},
      "followRedirects": {"type": "boolean"},
      "params": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
      "relabelings": {"type": "array", "items": {"type": "object"}},
      "metricRelabelings": {"type": "array", "items": {"type": "object"}},
      "tlsConfig": {"type": "object", "properties": {
        "insecureSkipVerify": {"type": "boolean"},
        "serverName": {"type": "string"},
        "caFile": {"type": "string"},
        "certFile": {"type": "string"},
        "keyFile": {"type": "string"},
        "ca": {"type": "object"},
        "cert": {"type": "object"},
        "keySecret": {"type": "object"}}}
    }
  }
}`

// promDuration is a Prometheus duration (1h30m, 30s, 0).
const promDuration = `^(0|([0-9]+(ms|s|m|h|d|w|y))+)$`

// addMonitoringSchemas adds the Prometheus Operator kinds to raw.
func addMonitoringSchemas(raw map[string]map[string]any) error {
	var m map[string]map[string]any
	if err := json.Unmarshal([]byte(monitoringSchemas), &m); err != nil {
		return fmt.Errorf("schemas: the monitoring.coreos.com schemas: %w", err)
	}
	for n, s := range m {
		raw[n] = s
	}
	return nil
}
