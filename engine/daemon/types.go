package daemon

import (
	"encoding/json"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/network"
)

// StrSlice accepts a JSON string or array of strings, as docker's API does
// for Cmd and Entrypoint.
type StrSlice []string

// UnmarshalJSON implements json.Unmarshaler.
func (s *StrSlice) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = StrSlice{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

// Config is the container configuration of docker's API (the fields this
// engine honours; the API decodes the request body straight into it).
type Config struct {
	Hostname     string
	Domainname   string
	User         string
	Env          []string
	Cmd          StrSlice
	Entrypoint   StrSlice
	WorkingDir   string
	Labels       map[string]string
	ExposedPorts map[string]struct{}
	Volumes      map[string]struct{}
	StopSignal   string
	StopTimeout  *int
	Tty          bool
	OpenStdin    bool
	AttachStdin  bool
	AttachStdout bool
	AttachStderr bool
	Image        string
}

// PortBinding is a host side of a published port.
type PortBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string
}

// RestartPolicy is docker's restart policy.
type RestartPolicy struct {
	Name              string // "", "no", "always", "unless-stopped", "on-failure"
	MaximumRetryCount int
}

// MountSpec is one entry of HostConfig.Mounts (docker run --mount).
type MountSpec struct {
	Type         string // bind, volume, tmpfs
	Source       string
	Target       string
	ReadOnly     bool
	TmpfsOptions *struct {
		SizeBytes int64
		Mode      uint32
	} `json:",omitempty"`
}

// DeviceMapping is docker run --device.
type DeviceMapping struct {
	PathOnHost        string
	PathInContainer   string
	CgroupPermissions string
}

// HostConfig is the host-side configuration of docker's API.
type HostConfig struct {
	Binds           []string
	Mounts          []MountSpec
	Tmpfs           map[string]string
	Devices         []DeviceMapping
	Privileged      bool
	CapAdd          []string
	CapDrop         []string
	ReadonlyRootfs  bool
	Memory          int64
	MemorySwap      int64
	NanoCpus        int64 `json:"NanoCpus"`
	CPUShares       int64 `json:"CpuShares"`
	PidsLimit       *int64
	RestartPolicy   RestartPolicy
	NetworkMode     string
	PortBindings    map[string][]PortBinding
	PublishAllPorts bool
	AutoRemove      bool
	DNS             []string `json:"Dns"`
	ExtraHosts      []string
}

// State is the run state of a container, in docker's terms.
type State struct {
	Status     string // created, running, restarting, exited, removing, dead
	Running    bool
	Restarting bool
	OOMKilled  bool
	Dead       bool
	Pid        int
	ExitCode   int
	Error      string
	StartedAt  time.Time
	FinishedAt time.Time
}

// MountPoint is a resolved mount of a container.
type MountPoint struct {
	Type        string // bind, volume, tmpfs
	Name        string `json:",omitempty"` // volume name
	Source      string
	Destination string
	RW          bool
	Anonymous   bool   `json:"-"`
	Options     string `json:",omitempty"` // tmpfs options
}

// Container is the persistent record of a container.
type Container struct {
	ID              string
	Name            string
	Created         time.Time
	Image           string // as given by the user
	ImageID         string
	Path            string
	Args            []string
	Config          Config
	HostConfig      HostConfig
	State           State
	RestartCount    int
	ManuallyStopped bool
	MountPoints     []MountPoint
	AnonVolumes     []string
	Endpoint        *network.Endpoint     `json:",omitempty"`
	Ports           []network.PortMapping `json:",omitempty"`
	LogPath         string
}
