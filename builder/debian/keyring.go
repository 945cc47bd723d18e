package debian

import (
	"bytes"
	"embed"
	"fmt"
	"sort"
	"sync"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// keyFiles are Debian's archive signing keys for bookworm and trixie: the
// automatic keys that sign the main and security archives' Release files and
// the stable release keys. They are public keys, copied verbatim from the
// debian-archive-keyring package (2023.3+deb12u2, /usr/share/keyrings). They
// are embedded rather than read from the host so that a build on a non-Debian
// host, or on a host with an old or tampered keyring, verifies against the
// same trust roots. A new Debian release means adding its keys here.
//
//go:embed keys/*.gpg
var keyFiles embed.FS

var debianKeyring = sync.OnceValues(func() (openpgp.EntityList, error) {
	entries, err := keyFiles.ReadDir("keys")
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var all openpgp.EntityList
	for _, n := range names {
		data, err := keyFiles.ReadFile("keys/" + n)
		if err != nil {
			return nil, err
		}
		el, err := openpgp.ReadKeyRing(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("embedded keyring %s: %w", n, err)
		}
		all = append(all, el...)
	}
	return all, nil
})

// DebianKeyring returns the embedded Debian archive keys (bookworm and trixie).
func DebianKeyring() (openpgp.EntityList, error) {
	return debianKeyring()
}
