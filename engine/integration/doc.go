// Package integration holds the engine's end-to-end tests and benchmarks:
// the daemon as a real process, the real docker CLI, runc, overlayfs,
// bridges and nftables, in a private network namespace. It has no
// non-test code and must not be imported.
package integration
