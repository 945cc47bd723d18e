// Package apps runs the containers a device is told to run. The apps file
// (/boot/firmware/bulkhead/apps.yaml by default: on the FAT boot partition,
// next to device.yaml, so it can be written on any computer before the
// first boot) lists services in a subset of the Compose file format. The
// engine reads it at start and on SIGHUP and reconciles its app containers
// to it: it pulls missing images, creates and starts new services,
// re-creates changed ones and removes the ones no longer listed. Restart
// policies (default `always`, as on balenaOS) bring apps back after a
// reboot; reconciliation only fills the gaps.
//
// It owns the file format and the containers labelled org.bulkhead.app.
// It must not touch containers it did not create (those made through the
// Docker API), and it must never act on a file it could not read or parse:
// an unmounted boot partition or a typo must not cost the device its
// applications.
package apps

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// DefaultPath is where the engine looks for the apps file on a device.
const DefaultPath = "/boot/firmware/bulkhead/apps.yaml"

// maxFileSize bounds the file: it is read into memory at every start.
const maxFileSize = 256 << 10

// File is a parsed and validated apps file.
type File struct {
	// Services by name; every one has passed Spec.
	Services map[string]*Service
	// Order starts dependencies first, then by name.
	Order []string
}

// Service is one entry of `services:`. Scalars that Compose accepts as
// numbers or strings (ports, sizes, CPU counts) are kept as strings and
// parsed by Spec.
type Service struct {
	Name            string    `yaml:"-"`
	Image           string    `yaml:"image"`
	Command         Command   `yaml:"command"`
	Entrypoint      Command   `yaml:"entrypoint"`
	Environment     Pairs     `yaml:"environment"`
	Labels          Pairs     `yaml:"labels"`
	Ports           []string  `yaml:"ports"`
	Expose          []string  `yaml:"expose"`
	Volumes         []string  `yaml:"volumes"`
	Tmpfs           Strings   `yaml:"tmpfs"`
	Devices         []string  `yaml:"devices"`
	Restart         string    `yaml:"restart"`
	NetworkMode     string    `yaml:"network_mode"`
	Privileged      bool      `yaml:"privileged"`
	CapAdd          []string  `yaml:"cap_add"`
	CapDrop         []string  `yaml:"cap_drop"`
	User            string    `yaml:"user"`
	WorkingDir      string    `yaml:"working_dir"`
	Hostname        string    `yaml:"hostname"`
	ReadOnly        bool      `yaml:"read_only"`
	MemLimit        string    `yaml:"mem_limit"`
	MemswapLimit    string    `yaml:"memswap_limit"`
	CPUs            string    `yaml:"cpus"`
	CPUShares       string    `yaml:"cpu_shares"`
	PidsLimit       string    `yaml:"pids_limit"`
	DNS             Strings   `yaml:"dns"`
	ExtraHosts      []string  `yaml:"extra_hosts"`
	StopSignal      string    `yaml:"stop_signal"`
	StopGracePeriod string    `yaml:"stop_grace_period"`
	DependsOn       DependsOn `yaml:"depends_on"`
}

// serviceKeys are the Compose keys a service may use, in the order the
// documentation lists them.
var serviceKeys = []string{
	"image", "command", "entrypoint", "environment", "labels", "ports", "expose", "volumes", "tmpfs",
	"devices", "restart", "network_mode", "privileged", "cap_add", "cap_drop", "user", "working_dir",
	"hostname", "read_only", "mem_limit", "memswap_limit", "cpus", "cpu_shares", "pids_limit", "dns",
	"extra_hosts", "stop_signal", "stop_grace_period", "depends_on",
}

// unsupported explains the Compose keys people use most that this engine
// does not have, so the error says what to do instead.
var unsupported = map[string]string{
	"build":          "the device does not build images: build and push it to a registry, then give image:",
	"container_name": "the container is named after the service",
	"env_file":       "put the variables under environment:",
	"networks":       "use network_mode: bridge (default), host or none",
	"healthcheck":    "health checks are not supported by this engine",
	"logging":        "logs are json files rotated by the engine (--log-max-size, --log-max-files)",
	"deploy":         "use mem_limit, cpus and restart directly on the service",
	"secrets":        "bind-mount a file from the data partition instead",
	"configs":        "bind-mount a file from the data partition instead",
	"profiles":       "every listed service runs",
	"pull_policy":    "images are pulled when missing: change the tag (or digest) to update an app",
	"scale":          "one container per service",
	"links":          "containers reach each other through the bridge by address",
}

var serviceNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// Load reads and parses the apps file at path. A missing file is reported
// with an error matching os.ErrNotExist.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	af, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return af, nil
}

// Parse decodes and validates an apps file. Every error names the line or
// the service and field at fault.
func Parse(data []byte) (*File, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("the apps file is larger than %d KiB", maxFileSize>>10)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the apps file is empty: write `services: {}` to run no apps")
		}
		return nil, fmt.Errorf("apps file: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("apps file: more than one YAML document: keep one")
	}
	top := &doc
	if top.Kind == yaml.DocumentNode && len(top.Content) == 1 {
		top = top.Content[0]
	}
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("apps file line %d: want a mapping with `services:`", top.Line)
	}
	f := &File{Services: map[string]*Service{}}
	haveServices := false
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch key := k.Value; {
		case key == "services":
			haveServices = true
			if err := f.decodeServices(v); err != nil {
				return nil, err
			}
		case key == "volumes":
			// Compose declares named volumes here; the engine creates them
			// on first use, so only plain declarations are accepted.
			if err := checkVolumeDecls(v); err != nil {
				return nil, err
			}
		case key == "version" || key == "name" || strings.HasPrefix(key, "x-"):
			// version is obsolete in Compose, name is the project name:
			// neither changes what runs. x-* are extension fields.
		default:
			return nil, fmt.Errorf("apps file line %d: top-level key %q is not supported (use services: and volumes:)", k.Line, key)
		}
	}
	if !haveServices {
		return nil, errors.New("apps file: no `services:` (write `services: {}` to run no apps)")
	}
	order, err := startOrder(f.Services)
	if err != nil {
		return nil, err
	}
	f.Order = order
	return f, nil
}

func (f *File) decodeServices(v *yaml.Node) error {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		return fmt.Errorf("apps file line %d: services: want a mapping of service names", v.Line)
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, sv := v.Content[i], v.Content[i+1]
		name := k.Value
		if !serviceNameRE.MatchString(name) {
			return fmt.Errorf("apps file line %d: service name %q: use at least two letters, digits, '_', '.', '-', starting with a letter or digit (it names the container)", k.Line, name)
		}
		if _, dup := f.Services[name]; dup {
			return fmt.Errorf("apps file line %d: service %q is listed twice", k.Line, name)
		}
		if sv.Kind != yaml.MappingNode {
			return fmt.Errorf("apps file line %d: service %q: want a mapping with at least image:", sv.Line, name)
		}
		for _, key := range mappingKeys(sv) {
			if strings.HasPrefix(key.Value, "x-") || contains(serviceKeys, key.Value) {
				continue
			}
			if hint, ok := unsupported[key.Value]; ok {
				return fmt.Errorf("apps file line %d: services.%s.%s is not supported: %s", key.Line, name, key.Value, hint)
			}
			return fmt.Errorf("apps file line %d: services.%s.%s is not a key this engine knows (supported: %s)", key.Line, name, key.Value, strings.Join(serviceKeys, ", "))
		}
		s := &Service{}
		if err := sv.Decode(s); err != nil {
			return fmt.Errorf("apps file: service %q: %w", name, err)
		}
		s.Name = name
		if _, err := s.Spec(); err != nil {
			return fmt.Errorf("apps file line %d: service %q: %w", k.Line, name, err)
		}
		f.Services[name] = s
	}
	return nil
}

// mappingKeys lists the keys of a mapping, those brought in by YAML merge
// keys (`<<: *common`) included. Merges are followed a few levels deep and
// a few hundred keys wide: a file of nested aliases must not make the
// engine spin.
func mappingKeys(m *yaml.Node) []*yaml.Node {
	var keys []*yaml.Node
	var walk func(m *yaml.Node, depth int)
	walk = func(m *yaml.Node, depth int) {
		if m.Kind == yaml.AliasNode && m.Alias != nil {
			m = m.Alias
		}
		if depth > 4 || len(keys) > 512 || m.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			switch {
			case k.Tag != "!!merge":
				keys = append(keys, k)
			case v.Kind == yaml.SequenceNode:
				for _, e := range v.Content {
					walk(e, depth+1)
				}
			default:
				walk(v, depth+1)
			}
		}
	}
	walk(m, 0)
	return keys
}

func checkVolumeDecls(v *yaml.Node) error {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		return fmt.Errorf("apps file line %d: volumes: want a mapping of volume names", v.Line)
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, d := v.Content[i], v.Content[i+1]
		empty := (d.Kind == yaml.ScalarNode && d.Tag == "!!null") || (d.Kind == yaml.MappingNode && len(d.Content) == 0)
		if !empty {
			return fmt.Errorf("apps file line %d: volumes.%s: drivers and options are not supported: declare it empty (`%s: {}`), the engine keeps it under /data/engine/volumes", d.Line, k.Value, k.Value)
		}
	}
	return nil
}

// startOrder sorts services so that each comes after what it depends on.
func startOrder(services map[string]*Service) ([]string, error) {
	names := make([]string, 0, len(services))
	for n := range services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, dep := range services[n].DependsOn {
			if _, ok := services[dep]; !ok {
				return nil, fmt.Errorf("apps file: service %q depends on %q, which is not a service of the file", n, dep)
			}
		}
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("apps file: depends_on forms a cycle: %s", strings.Join(append(path, n), " -> "))
		case 2:
			return nil
		}
		state[n] = 1
		deps := append([]string(nil), services[n].DependsOn...)
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, n)
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Command is a command line: a YAML list, or a string split like a shell
// would (quotes and backslashes; no variables or globs), as Compose does.
type Command []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (c *Command) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*c = nil
			return nil
		}
		words, err := splitWords(n.Value)
		if err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		*c = words
		return nil
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		*c = list
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

// Strings is one string or a list of them.
type Strings []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Strings) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*s = nil
		} else {
			*s = Strings{n.Value}
		}
		return nil
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		*s = list
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

// Pairs is Compose's "list or dictionary" of KEY=value entries
// (environment, labels), kept as a KEY=value list in the file's order.
type Pairs []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Pairs) UnmarshalYAML(n *yaml.Node) error {
	var out []string
	switch n.Kind {
	case yaml.SequenceNode:
		for _, e := range n.Content {
			if e.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: want KEY=value", e.Line)
			}
			if !strings.Contains(e.Value, "=") {
				return fmt.Errorf("line %d: %q has no value: write %s=value (the device has no shell environment to take it from)", e.Line, e.Value, e.Value)
			}
			out = append(out, e.Value)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: %s: want a string, number or boolean", v.Line, k.Value)
			}
			if v.Tag == "!!null" {
				return fmt.Errorf("line %d: %s has no value: give one (the device has no shell environment to take it from)", k.Line, k.Value)
			}
			out = append(out, k.Value+"="+v.Value)
		}
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			break
		}
		fallthrough
	default:
		return fmt.Errorf("line %d: want a mapping (KEY: value) or a list (- KEY=value)", n.Line)
	}
	for _, kv := range out {
		if k, _, _ := strings.Cut(kv, "="); k == "" {
			return fmt.Errorf("line %d: %q has an empty name", n.Line, kv)
		}
	}
	*p = out
	return nil
}

// DependsOn is Compose's depends_on: a list of services, or a mapping whose
// entries may only ask for `condition: service_started` (the engine has no
// health checks).
type DependsOn []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *DependsOn) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		*d = list
		return nil
	case yaml.MappingNode:
		var out []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			var opts struct {
				Condition string `yaml:"condition"`
			}
			if v.Kind == yaml.MappingNode {
				if err := v.Decode(&opts); err != nil {
					return err
				}
			}
			if opts.Condition != "" && opts.Condition != "service_started" {
				return fmt.Errorf("line %d: depends_on.%s.condition %q: only service_started is supported (the engine has no health checks)", v.Line, k.Value, opts.Condition)
			}
			out = append(out, k.Value)
		}
		*d = out
		return nil
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*d = nil
			return nil
		}
	}
	return fmt.Errorf("line %d: depends_on: want a list of service names", n.Line)
}

// splitWords splits s into words like a POSIX shell without expansions:
// blanks separate words, single quotes keep everything literal, double
// quotes keep everything but \" and \\, a backslash outside quotes escapes
// the next character.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case ch == '\'':
			inWord = true
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("command %q: unterminated single quote", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
		case ch == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("command %q: unterminated double quote", s)
			}
		case ch == '\\':
			inWord = true
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			}
		default:
			inWord = true
			cur.WriteByte(ch)
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
