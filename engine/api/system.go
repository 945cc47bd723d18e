package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/engine/daemon"
	"github.com/bulkhead-os/bulkhead/engine/network"
	"github.com/bulkhead-os/bulkhead/engine/volume"
)

func writeJSONBody(w http.ResponseWriter, v any) { json.NewEncoder(w).Encode(v) }

func kernelVersion() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func machine() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return goruntime.GOARCH
	}
	return unix.ByteSliceToString(u.Machine[:])
}

func (s *Server) versionInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"Platform": map[string]string{"Name": "Bulkhead Engine"},
		"Components": []map[string]any{{"Name": "Engine", "Version": s.version, "Details": map[string]string{
			"ApiVersion": Version, "MinAPIVersion": MinVersion, "GoVersion": goruntime.Version(), "Os": "linux", "Arch": goruntime.GOARCH, "KernelVersion": kernelVersion(),
		}}},
		"Version": s.version, "ApiVersion": Version, "MinAPIVersion": MinVersion, "GitCommit": "", "GoVersion": goruntime.Version(),
		"Os": "linux", "Arch": goruntime.GOARCH, "KernelVersion": kernelVersion(), "BuildTime": "",
	})
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	var running, stopped int
	for _, c := range s.d.Containers() {
		if c.State.Running {
			running++
		} else {
			stopped++
		}
	}
	var si unix.Sysinfo_t
	unix.Sysinfo(&si)
	host, _ := os.Hostname()
	cg := s.d.Cgroups()
	var warnings []string
	if err := s.d.Net.Available(); err != nil {
		warnings = append(warnings, "WARNING: bridge networking is unavailable: "+err.Error())
	}
	if !cg.Controllers["memory"] {
		warnings = append(warnings, "WARNING: No memory limit support")
	}
	if !cg.Controllers["cpu"] {
		warnings = append(warnings, "WARNING: No cpu cfs quota support")
	}
	o := s.d.Options()
	writeJSON(w, http.StatusOK, map[string]any{
		"ID": "", "Containers": running + stopped, "ContainersRunning": running, "ContainersPaused": 0, "ContainersStopped": stopped,
		"Images": len(s.d.Store.Images()), "Driver": "overlay2", "DriverStatus": [][2]string{{"Backing Filesystem", "extfs"}},
		"Plugins":     map[string][]string{"Volume": {"local"}, "Network": {"bridge", "host", "null"}, "Log": {"json-file"}},
		"MemoryLimit": cg.Controllers["memory"], "SwapLimit": cg.Controllers["memory"], "CpuCfsPeriod": cg.Controllers["cpu"], "CpuCfsQuota": cg.Controllers["cpu"],
		"CPUShares": cg.Controllers["cpu"], "CPUSet": cg.Controllers["cpuset"], "PidsLimit": cg.Controllers["pids"], "IPv4Forwarding": s.d.Net.Available() == nil,
		"Debug": false, "NFd": 0, "NGoroutines": goruntime.NumGoroutine(), "SystemTime": time.Now().Format(time.RFC3339Nano),
		"LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": strconv.Itoa(cg.Version), "NEventsListener": 0,
		"KernelVersion": kernelVersion(), "OperatingSystem": "Bulkhead", "OSVersion": "", "OSType": "linux", "Architecture": machine(),
		"IndexServerAddress": "https://index.docker.io/v1/",
		"RegistryConfig":     map[string]any{"IndexConfigs": map[string]any{}, "InsecureRegistryCIDRs": []string{"127.0.0.0/8"}, "Mirrors": []string{}},
		"NCPU":               goruntime.NumCPU(), "MemTotal": int64(si.Totalram) * int64(si.Unit), "DockerRootDir": o.Root, "Name": host,
		"Labels": []string{}, "ExperimentalBuild": false, "ServerVersion": s.version,
		"Runtimes": map[string]any{"runc": map[string]string{"path": o.Runc}}, "DefaultRuntime": "runc",
		"Swarm":              map[string]any{"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": nil},
		"LiveRestoreEnabled": true, "Isolation": "", "InitBinary": "", "SecurityOptions": []string{},
		"ContainerdCommit": map[string]string{"ID": ""}, "RuncCommit": map[string]string{"ID": ""}, "InitCommit": map[string]string{"ID": ""},
		"Warnings": warnings,
	})
}

func (s *Server) systemDF(w http.ResponseWriter, r *http.Request) {
	users := s.d.ImageUsers()
	layerUsers := s.d.Store.LayerUsers()
	images := []map[string]any{}
	for _, im := range s.d.Store.Images() {
		j := s.imageSummary(im, users)
		var shared int64
		for _, l := range im.Layers {
			if layerUsers[l.DiffID] > 1 {
				shared += l.Size
			}
		}
		j["SharedSize"] = shared
		images = append(images, j)
	}
	containers := []map[string]any{}
	for _, c := range s.d.Containers() {
		j := s.summary(&c)
		j["SizeRw"] = s.d.ContainerSize(c.ID)
		containers = append(containers, j)
	}
	vols := []map[string]any{}
	list, _ := s.d.Volumes.List()
	vusers := s.d.VolumeUsers()
	for _, v := range list {
		j := volumeJSON(v)
		j["UsageData"] = map[string]int64{"Size": volume.Size(v), "RefCount": int64(vusers[v.Name])}
		vols = append(vols, j)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"LayersSize": s.d.Store.Usage().LayersSize, "Images": images, "Containers": containers, "Volumes": vols, "BuildCache": []any{},
	})
}

func volumeJSON(v *volume.Volume) map[string]any {
	labels := v.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return map[string]any{"Name": v.Name, "Driver": "local", "Mountpoint": v.Mountpoint, "CreatedAt": v.CreatedAt.Format(time.RFC3339),
		"Labels": labels, "Scope": "local", "Options": map[string]string{}}
}

func (s *Server) volumeList(w http.ResponseWriter, r *http.Request) {
	list, err := s.d.Volumes.List()
	if err != nil {
		fail(w, err)
		return
	}
	filters := parseFilters(r.URL.Query().Get("filters"))
	vusers := s.d.VolumeUsers()
	out := []map[string]any{}
	for _, v := range list {
		if d := filters["dangling"]; len(d) > 0 && (d[0] == "true" || d[0] == "1") != (vusers[v.Name] == 0) {
			continue
		}
		if names := filters["name"]; len(names) > 0 && !containsSub(names, v.Name) {
			continue
		}
		out = append(out, volumeJSON(v))
	}
	writeJSON(w, http.StatusOK, map[string]any{"Volumes": out, "Warnings": []string{}})
}

func containsSub(list []string, s string) bool {
	for _, x := range list {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}

func (s *Server) volumeCreate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name       string
		Driver     string
		DriverOpts map[string]string
		Labels     map[string]string
	}
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	if body.Driver != "" && body.Driver != "local" {
		writeError(w, http.StatusBadRequest, "volume driver "+body.Driver+" is not supported by this engine: only local volumes")
		return
	}
	if len(body.DriverOpts) > 0 {
		writeError(w, http.StatusBadRequest, "volume driver options are not supported by this engine")
		return
	}
	v, err := s.d.Volumes.Create(body.Name, body.Labels)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, volumeJSON(v))
}

func (s *Server) volumeInspect(w http.ResponseWriter, r *http.Request) {
	v, err := s.d.Volumes.Get(r.PathValue("name"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, volumeJSON(v))
}

func (s *Server) volumeDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.d.RemoveVolume(r.PathValue("name")); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// networkID derives a stable 64-hex ID, which the CLI shortens to 12.
func networkID(name string) string {
	h := sha256.Sum256([]byte("bulkhead-network-" + name))
	return hex.EncodeToString(h[:])
}

func (s *Server) networkJSON(name string) map[string]any {
	driver := map[string]string{network.ModeBridge: "bridge", network.ModeHost: "host", network.ModeNone: "null"}[name]
	ipam := map[string]any{"Driver": "default", "Config": []map[string]string{}, "Options": nil}
	opts := map[string]string{}
	containers := map[string]any{}
	if name == network.ModeBridge {
		ipam["Config"] = []map[string]string{{"Subnet": s.d.Net.Subnet().String(), "Gateway": s.d.Net.Gateway().String()}}
		opts["com.docker.network.bridge.name"] = s.d.Net.BridgeName()
	}
	for _, c := range s.d.Containers() {
		if c.State.Running && c.HostConfig.NetworkMode == name {
			e := map[string]string{"Name": c.Name, "EndpointID": networkID(c.ID)}
			if c.Endpoint != nil {
				e["IPv4Address"] = c.Endpoint.IP.String() + "/" + strconv.Itoa(c.Endpoint.PrefixLen)
				e["MacAddress"] = c.Endpoint.MAC.String()
			}
			containers[c.ID] = e
		}
	}
	return map[string]any{
		"Name": name, "Id": networkID(name), "Created": s.d.Started().Format(time.RFC3339Nano), "Scope": "local", "Driver": driver,
		"EnableIPv6": false, "IPAM": ipam, "Internal": false, "Attachable": false, "Ingress": false,
		"ConfigFrom": map[string]string{"Network": ""}, "ConfigOnly": false, "Containers": containers, "Options": opts, "Labels": map[string]string{},
	}
}

var networkNames = []string{network.ModeBridge, network.ModeHost, network.ModeNone}

func (s *Server) networkList(w http.ResponseWriter, r *http.Request) {
	out := []map[string]any{}
	for _, n := range networkNames {
		out = append(out, s.networkJSON(n))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) networkInspect(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, n := range networkNames {
		if id == n || (len(id) >= 3 && strings.HasPrefix(networkID(n), id)) {
			writeJSON(w, http.StatusOK, s.networkJSON(n))
			return
		}
	}
	writeError(w, http.StatusNotFound, "network "+id+" not found")
}

// parseFilters reads docker's filters parameter: {"key":{"value":true}} or
// the older {"key":["value"]}.
func parseFilters(s string) map[string][]string {
	out := map[string][]string{}
	if s == "" {
		return out
	}
	var m map[string]map[string]bool
	if json.Unmarshal([]byte(s), &m) == nil {
		for k, vs := range m {
			for v := range vs {
				out[k] = append(out[k], v)
			}
		}
		return out
	}
	var l map[string][]string
	if json.Unmarshal([]byte(s), &l) == nil {
		return l
	}
	return out
}

func matchFilters(c *daemon.Container, f map[string][]string) bool {
	for k, vs := range f {
		ok := false
		for _, v := range vs {
			switch k {
			case "name":
				ok = ok || strings.Contains(c.Name, strings.TrimPrefix(v, "/"))
			case "id":
				ok = ok || strings.HasPrefix(c.ID, v)
			case "status":
				ok = ok || stateName(c) == v
			case "label":
				key, val, hasVal := strings.Cut(v, "=")
				got, present := c.Config.Labels[key]
				ok = ok || (present && (!hasVal || got == val))
			case "volume":
				for _, m := range c.MountPoints {
					ok = ok || m.Name == v || m.Destination == v
				}
			case "ancestor":
				ok = ok || c.Image == v || strings.HasPrefix(strings.TrimPrefix(c.ImageID, "sha256:"), strings.TrimPrefix(v, "sha256:"))
			default:
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
