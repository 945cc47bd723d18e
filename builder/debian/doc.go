// Package debian is Bulkhead's client for the Debian archive: it finds the
// mirrors (the host's apt sources or BULKHEAD_DEBIAN_MIRROR), verifies each
// suite's Release file against Debian's archive keys embedded here, builds a
// package index per architecture from the Packages files the Release vouches
// for, resolves names and dependency closures, downloads pinned .deb files
// into the content-addressed cache, and reads .deb files (control fields,
// data tree, licenses) without root.
//
// Trust flows one way: embedded keys -> signed Release -> SHA-256 of each
// index -> SHA-256 of each package -> lock file. Nothing this package hands
// out has skipped a link of that chain.
//
// It must not decide what a board needs (that is builder/resolve and the
// board files), must not install packages or run their maintainer scripts
// (an image is assembled, not installed), and must never hard-code a mirror:
// the mirror comes from configuration. Progress goes to the caller's
// callback; log/slog carries debug detail only.
package debian
