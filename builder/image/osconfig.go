package image

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// OSConfig is rootfs/image.yaml: the root filesystem's content common to
// every board.
type OSConfig struct {
	Packages []string `yaml:"packages"`
	Exclude  []string `yaml:"exclude"`
	Modules  []string `yaml:"modules"`
}

// OSConfigPath is where the configuration lives in the source tree.
const OSConfigPath = "rootfs/image.yaml"

// LoadOSConfig reads rootfs/image.yaml under src.
func LoadOSConfig(src string) (*OSConfig, error) {
	path := filepath.Join(src, OSConfigPath)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image configuration: %w", err)
	}
	var c OSConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}
