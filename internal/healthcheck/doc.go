// Package healthcheck is the probe behind "ecr-mirror healthcheck": it
// asks the mirror configured by the same settings the server reads
// whether it is alive (GET /healthz answering 200).
//
// [Target] works out where to ask: METRICS_ADDR's listener (always plain
// HTTP) when set, else LISTEN_ADDR's, over https when TLS_CERTIFICATE is
// set; a wildcard host (":5000", "0.0.0.0", "::") is asked on 127.0.0.1.
// Over https the server must present the certificate in TLS_CERTIFICATE,
// or one issued by a CA certificate that file holds; host names are not
// checked, as the probe dials a local address. When ALLOW_NETWORKS leaves
// out the loopback address asked from, a 403 is explained by that.
//
// [Probe.Check] asks once, never through HTTP(S)_PROXY, and turns any
// other answer into one line: the status and the reason in the body (an
// OCI error's code and message, else its first line).
package healthcheck
