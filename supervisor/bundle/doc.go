// Package bundle owns the Bulkhead update bundle: the file the builder
// writes beside each image (deploy/<board>/<name>-<board>-<version>.bundle)
// and the supervisor installs into the inactive root slot.
//
// A bundle is a signed manifest followed by the compressed slot image, laid
// out so that a device reading it as a stream (from a socket, an HTTP body
// or a registry blob) knows and has verified everything about the update
// before the first payload byte arrives:
//
//	offset      size  field
//	0           16    magic "bulkhead-bundle\n"
//	16          4     M, manifest length, big endian, 2..65536
//	20          M     manifest: UTF-8 JSON (type Manifest)
//	20+M        2     S, signature block length, big endian, a multiple of 72, 72..1152
//	22+M        S     signatures: S/72 entries of key ID (8 bytes) + ed25519 signature (64)
//	22+M+S      P     payload: exactly Manifest.Payload.Size bytes, then end of file
//
// Each signature is ed25519 over "bulkhead-bundle-manifest-v1\x00" followed
// by the M manifest bytes exactly as stored; the prefix keeps a bundle
// signature from being valid for any other message the same key may sign.
// The key ID is keys.ID of the signing key. Open accepts the bundle if any
// entry whose key ID is trusted verifies; several entries let one bundle be
// accepted by devices that trust an old and a new key during a rotation.
//
// The manifest commits to the payload by size and SHA-256, and to the slot
// image the payload decompresses to by size and SHA-256. The reader checks
// both while streaming and reports a mismatch instead of io.EOF, so a
// consumer that only proceeds after a clean EOF can never act on unverified
// bytes. Payload.Type "full" is the only type this version installs; the
// manifest leaves room for a delta payload (Payload.Base names the slot
// image it applies to), which Open rejects with ErrUnsupported until it
// exists.
//
// The package also defines how bundles travel through OCI registries
// (Publish, FetchOCI); see oci.go. It does not choose the slot, touch the
// boot state or decide whether an update is wanted beyond CheckPolicy.
package bundle
