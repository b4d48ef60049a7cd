// Command validate supports deploy/validate.sh, offline:
//
//	validate schemas -spec DIR -out DIR   # Kubernetes OpenAPI v3 -> kubeconform JSON schemas
//	validate lint -dir DIR                # cross-object checks a schema cannot make
//	validate lint -rendered FILE          # the same on a rendered chart (helm template)
//	validate rules FILE...                # PromQL and the fields of alerting rules
//	validate dashboard FILE...            # a Grafana dashboard's queries and panels
//
// Its tests also check deploy/aws (aws_test.go): the IAM policy allows
// every AWS call the mirror's code makes and no more than its prefix and
// ECR reads, the bucket lifecycle only aborts stale multipart uploads.
//
// It is its own module so that the mirror's go.mod stays untouched.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate schemas|lint|rules|dashboard [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "schemas":
		err = runSchemas(os.Args[2:])
	case "lint":
		err = runLint(os.Args[2:])
	case "rules":
		err = runRules(os.Args[2:])
	case "dashboard":
		err = runDashboard(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
