package pull

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// FileKeychain reads registry credentials from a docker config.json (the
// "auths" section written by `docker login`). The file is read on every
// pull, so credentials can be provisioned without restarting the engine. A
// missing file means anonymous pulls.
type FileKeychain struct{ Path string }

type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
}

// Resolve implements authn.Keychain.
func (k FileKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	if k.Path == "" {
		return authn.Anonymous, nil
	}
	data, err := os.ReadFile(k.Path)
	if os.IsNotExist(err) {
		return authn.Anonymous, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", k.Path, err)
	}
	var cfg dockerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w (expected docker's config.json format)", k.Path, err)
	}
	reg := res.RegistryStr()
	keys := []string{reg, "https://" + reg, "http://" + reg, "https://" + reg + "/v1/"}
	if reg == "index.docker.io" {
		keys = append(keys, "https://index.docker.io/v1/", "docker.io")
	}
	for _, key := range keys {
		e, ok := cfg.Auths[key]
		if !ok {
			continue
		}
		ac := authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("registry credentials %s: entry %s: bad base64 in auth", k.Path, key)
			}
			ac.Username, ac.Password, _ = strings.Cut(string(raw), ":")
		}
		return authn.FromConfig(ac), nil
	}
	return authn.Anonymous, nil
}

// AuthFromHeader decodes docker's X-Registry-Auth header (base64url JSON of
// an AuthConfig). It returns nil when the header holds no credentials.
func AuthFromHeader(h string) authn.Authenticator {
	if h == "" {
		return nil
	}
	raw, err := base64.URLEncoding.DecodeString(h)
	if err != nil {
		if raw, err = base64.RawURLEncoding.DecodeString(h); err != nil {
			return nil
		}
	}
	var ac struct {
		Username      string `json:"username"`
		Password      string `json:"password"`
		Auth          string `json:"auth"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	}
	if json.Unmarshal(raw, &ac) != nil {
		return nil
	}
	if ac.Username == "" && ac.Password == "" && ac.Auth == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password, Auth: ac.Auth, IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken})
}
