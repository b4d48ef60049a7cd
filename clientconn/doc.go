// Package clientconn keeps clients that stop reading, and more clients
// than the process has file descriptors for, from harming the others.
//
// A Watchdog wraps an http.Handler. It hands response bytes to the
// connection in pieces of at most ChunkSize (on the sendfile path too), and
// cuts a response whose piece the client has not taken for its timeout:
// the request's context ends (so whatever the handler waits on, such as a
// download it follows, lets go of it) and the response's write deadline is
// set in the past, so the blocked write fails and the server drops the
// connection (HTTP/1) or resets the stream (HTTP/2). A client that keeps
// taking pieces, however slowly, is never cut: the clock restarts with
// every piece.
//
// A Budget wraps net.Listeners and counts the connections they hand out.
// With its limit reached, a new connection gets an immediate 503 with an
// OCI error body and Retry-After and is closed, instead of the process
// running out of descriptors and accept failing for everyone. BudgetFor
// sizes it from MAX_CLIENT_CONNECTIONS or the open-file limit.
//
// Limits start the two together for a process's servers.
package clientconn
