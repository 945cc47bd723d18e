// Package cgroup finds out what resource control the kernel offers the
// engine's containers, and mounts the cgroup2 hierarchy when nobody did.
//
// It owns the checks behind "--memory needs the memory controller" errors.
// It must not create or configure container cgroups: runc does that from
// the OCI spec (cgroup v2 on Bulkhead devices, v1 where a host still
// binds the controllers there).
package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Root is where cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// Info is what the kernel offers.
type Info struct {
	Version     int             // 2 (unified), 1 (legacy or hybrid), 0 (none mounted)
	Controllers map[string]bool // controllers containers can use
}

// Detect inspects the mounted hierarchies.
func Detect() Info {
	info := Info{Controllers: map[string]bool{}}
	var st unix.Statfs_t
	if err := unix.Statfs(Root, &st); err != nil {
		return info
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		info.Version = 2
		// runc puts a relative cgroupsPath under the parent of its own
		// cgroup; the controllers that parent offers are the ones
		// containers can get.
		parent := filepath.Join(Root, filepath.Dir(ownCgroup2()))
		data, err := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
		if err != nil {
			data, _ = os.ReadFile(filepath.Join(Root, "cgroup.controllers"))
		}
		for _, c := range strings.Fields(string(data)) {
			info.Controllers[c] = true
		}
		return info
	}
	for _, c := range []string{"memory", "cpu", "pids", "cpuset", "devices", "blkio"} {
		var cs unix.Statfs_t
		if unix.Statfs(filepath.Join(Root, c), &cs) == nil && cs.Type == unix.CGROUP_SUPER_MAGIC {
			info.Version = 1
			info.Controllers[c] = true
		}
	}
	return info
}

func ownCgroup2() string {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return "/"
}

// Require returns an error naming the fix when controller is missing.
func (i Info) Require(controller, feature string) error {
	if i.Controllers[controller] {
		return nil
	}
	var have []string
	for c := range i.Controllers {
		have = append(have, c)
	}
	if i.Version == 0 {
		return fmt.Errorf("%s needs cgroups, and none are mounted at %s: mount cgroup2 there (the engine does so at start when it can) or drop the option", feature, Root)
	}
	return fmt.Errorf("%s needs the cgroup %q controller, which this kernel does not offer to containers (cgroup v%d, available: %s): enable it in the kernel (CONFIG_MEMCG, CONFIG_CGROUP_SCHED) and in the parent's cgroup.subtree_control, or drop the option",
		feature, controller, i.Version, strings.Join(have, " "))
}

// EnsureMounted mounts cgroup2 at /sys/fs/cgroup when nothing is mounted
// there (a minimal PID 1 may not do it), so runc can create cgroups.
func EnsureMounted() error {
	var st unix.Statfs_t
	if err := unix.Statfs(Root, &st); err != nil {
		return fmt.Errorf("cgroups: %s: %w (is /sys mounted?)", Root, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC || st.Type == unix.TMPFS_MAGIC {
		return nil // unified, or a v1/hybrid tmpfs of hierarchies
	}
	if err := unix.Mount("cgroup2", Root, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "nsdelegate"); err != nil {
		return fmt.Errorf("cgroups: mount cgroup2 at %s: %w (the kernel needs CONFIG_CGROUPS)", Root, err)
	}
	return nil
}
