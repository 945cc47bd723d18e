package daemon

import (
	"path/filepath"

	"github.com/bulkhead-os/bulkhead/engine/volume"
)

// ContainerSize is the bytes a container wrote to its own layer.
func (d *Daemon) ContainerSize(id string) int64 {
	return volume.DirSize(filepath.Join(d.containersDir(), id, "upper"))
}

// VolumeUsers counts the containers that mount each volume.
func (d *Daemon) VolumeUsers() map[string]int {
	n := map[string]int{}
	for _, c := range d.Containers() {
		for _, m := range c.MountPoints {
			if m.Type == "volume" {
				n[m.Name]++
			}
		}
	}
	return n
}

// ImageUsers counts the containers that use each image ID.
func (d *Daemon) ImageUsers() map[string]int {
	n := map[string]int{}
	for _, c := range d.Containers() {
		n[c.ImageID]++
	}
	return n
}
