package apps

import (
	"reflect"
	"strings"
	"testing"

	"github.com/bulkhead-os/bulkhead/engine/daemon"
)

const fullFile = `
version: "3.8"   # obsolete in Compose, ignored
x-common: &common
  restart: unless-stopped
services:
  web:
    <<: *common
    image: registry.example.com/web:1.4
    command: serve --listen ":80" 'two words'
    environment:
      GREETING: hello
      DEBUG: 1
    labels: [team=kiosk]
    ports:
      - "8080:80"
      - 127.0.0.1:9000-9001:9000-9001/udp
      - 7000
    expose: [81]
    volumes:
      - webdata:/data
      - /data/shared:/shared:ro
      - /cache
    tmpfs: /run:size=8m
    devices: ["/dev/ttyUSB0:/dev/ttyS9:rw"]
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    user: "1000:1000"
    working_dir: /srv
    hostname: kiosk
    read_only: true
    mem_limit: 256m
    memswap_limit: 512m
    cpus: 0.5
    cpu_shares: 512
    pids_limit: 100
    dns: [10.0.2.3]
    extra_hosts: ["db:10.0.0.5", "cache=10.0.0.6"]
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    depends_on: [db]
  db:
    image: registry.example.com/db@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    entrypoint: ["/db", "--dir", "/var/db"]
    network_mode: host
    privileged: true
    restart: on-failure:3
volumes:
  webdata: {}
  other:
`

func TestAFullComposeSubsetFileTranslatesToDockerSettings(t *testing.T) {
	f, err := Parse([]byte(fullFile))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Order, []string{"db", "web"}) {
		t.Errorf("order = %v, want db before web", f.Order)
	}
	web, err := f.Services["web"].Spec()
	if err != nil {
		t.Fatal(err)
	}
	cfg, hc := web.Config, web.HostConfig
	if want := []string{"serve", "--listen", ":80", "two words"}; !reflect.DeepEqual([]string(cfg.Cmd), want) {
		t.Errorf("Cmd = %q, want %q", cfg.Cmd, want)
	}
	if want := []string{"GREETING=hello", "DEBUG=1"}; !reflect.DeepEqual(cfg.Env, want) {
		t.Errorf("Env = %q", cfg.Env)
	}
	if cfg.Labels["team"] != "kiosk" || cfg.Labels[LabelApp] != "web" || cfg.Labels[LabelHash] != web.Hash {
		t.Errorf("Labels = %v", cfg.Labels)
	}
	wantPorts := map[string][]daemon.PortBinding{
		"80/tcp":   {{HostPort: "8080"}},
		"9000/udp": {{HostIP: "127.0.0.1", HostPort: "9000"}},
		"9001/udp": {{HostIP: "127.0.0.1", HostPort: "9001"}},
		"7000/tcp": {{}},
	}
	if !reflect.DeepEqual(hc.PortBindings, wantPorts) {
		t.Errorf("PortBindings = %v", hc.PortBindings)
	}
	if _, ok := cfg.ExposedPorts["81/tcp"]; !ok || len(cfg.ExposedPorts) != 5 {
		t.Errorf("ExposedPorts = %v", cfg.ExposedPorts)
	}
	if want := []string{"webdata:/data:rw", "/data/shared:/shared:ro"}; !reflect.DeepEqual(hc.Binds, want) {
		t.Errorf("Binds = %q", hc.Binds)
	}
	if _, ok := cfg.Volumes["/cache"]; !ok {
		t.Errorf("Volumes = %v", cfg.Volumes)
	}
	if hc.Tmpfs["/run"] != "size=8m" {
		t.Errorf("Tmpfs = %v", hc.Tmpfs)
	}
	if want := []daemon.DeviceMapping{{PathOnHost: "/dev/ttyUSB0", PathInContainer: "/dev/ttyS9", CgroupPermissions: "rw"}}; !reflect.DeepEqual(hc.Devices, want) {
		t.Errorf("Devices = %v", hc.Devices)
	}
	if hc.RestartPolicy.Name != "unless-stopped" || hc.NetworkMode != "bridge" || !hc.ReadonlyRootfs || hc.Privileged {
		t.Errorf("restart %v network %q read-only %v privileged %v", hc.RestartPolicy, hc.NetworkMode, hc.ReadonlyRootfs, hc.Privileged)
	}
	if hc.Memory != 256<<20 || hc.MemorySwap != 512<<20 || hc.NanoCpus != 5e8 || hc.CPUShares != 512 || hc.PidsLimit == nil || *hc.PidsLimit != 100 {
		t.Errorf("limits: memory %d swap %d cpus %d shares %d pids %v", hc.Memory, hc.MemorySwap, hc.NanoCpus, hc.CPUShares, hc.PidsLimit)
	}
	if cfg.User != "1000:1000" || cfg.WorkingDir != "/srv" || cfg.Hostname != "kiosk" || cfg.StopSignal != "SIGINT" || cfg.StopTimeout == nil || *cfg.StopTimeout != 90 {
		t.Errorf("user %q dir %q host %q signal %q timeout %v", cfg.User, cfg.WorkingDir, cfg.Hostname, cfg.StopSignal, cfg.StopTimeout)
	}
	if !reflect.DeepEqual(hc.DNS, []string{"10.0.2.3"}) || !reflect.DeepEqual(hc.ExtraHosts, []string{"db:10.0.0.5", "cache:10.0.0.6"}) {
		t.Errorf("dns %v hosts %v", hc.DNS, hc.ExtraHosts)
	}

	db, err := f.Services["db"].Spec()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/db", "--dir", "/var/db"}; !reflect.DeepEqual([]string(db.Config.Entrypoint), want) || db.Config.Cmd != nil {
		t.Errorf("Entrypoint = %q Cmd = %q", db.Config.Entrypoint, db.Config.Cmd)
	}
	if db.HostConfig.NetworkMode != "host" || !db.HostConfig.Privileged || db.HostConfig.RestartPolicy != (daemon.RestartPolicy{Name: "on-failure", MaximumRetryCount: 3}) {
		t.Errorf("db host config = %+v", db.HostConfig)
	}
}

func TestAServiceWithOnlyAnImageRunsAlwaysOnTheBridge(t *testing.T) {
	f, err := Parse([]byte("services:\n  app:\n    image: example.com/app:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Services["app"].Spec()
	if err != nil {
		t.Fatal(err)
	}
	if s.HostConfig.RestartPolicy.Name != "always" || s.HostConfig.NetworkMode != "bridge" || s.Config.Image != "example.com/app:1" {
		t.Errorf("spec = %+v", s)
	}
}

func TestTheHashChangesWithTheSettingsAndOnlyWithThem(t *testing.T) {
	hash := func(doc string) string {
		t.Helper()
		f, err := Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		s, err := f.Services["app"].Spec()
		if err != nil {
			t.Fatal(err)
		}
		return s.Hash
	}
	base := hash("services:\n  app:\n    image: example.com/app:1\n    environment: {A: '1', B: '2'}\n")
	for _, tc := range []struct {
		name, doc string
		same      bool
	}{
		{"comments and key order do not count", "# hi\nservices:\n  app:\n    environment: {A: '1', B: '2'}\n    image: example.com/app:1 # the app\n", true},
		{"a map and a list with the same pairs are equal", "services:\n  app:\n    image: example.com/app:1\n    environment: [A=1, B=2]\n", true},
		{"the default restart policy is always", "services:\n  app:\n    image: example.com/app:1\n    restart: always\n    environment: [A=1, B=2]\n", true},
		{"a new tag counts", "services:\n  app:\n    image: example.com/app:2\n    environment: [A=1, B=2]\n", false},
		{"a changed variable counts", "services:\n  app:\n    image: example.com/app:1\n    environment: [A=1, B=3]\n", false},
		{"a published port counts", "services:\n  app:\n    image: example.com/app:1\n    environment: [A=1, B=2]\n    ports: ['80:80']\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hash(tc.doc); (got == base) != tc.same {
				t.Errorf("hash %s vs %s: same = %v, want %v", got, base, got == base, tc.same)
			}
		})
	}
}

func TestMistakesAreRefusedWithTheLineAndTheFix(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"an empty file", "", "services: {}"},
		{"a file without services", "volumes: {}\n", "no `services:`"},
		{"an unknown top-level key", "services: {}\nnetworks: {}\n", "line 2: top-level key \"networks\""},
		{"a build section", "services:\n  app:\n    build: .\n", "line 3: services.app.build is not supported: the device does not build images"},
		{"a typo in a key", "services:\n  app:\n    image: a/b\n    enviroment: {A: 1}\n", "line 4: services.app.enviroment is not a key this engine knows"},
		{"a missing image", "services:\n  app:\n    restart: always\n", "image: required"},
		{"a bad image reference", "services:\n  app:\n    image: 'UPPER/case:tag'\n", "image: image reference"},
		{"a one-letter service name", "services:\n  a:\n    image: a/b\n", "service name \"a\""},
		{"a relative bind mount", "services:\n  app:\n    image: a/b\n    volumes: [./data:/data]\n", "relative host paths"},
		{"a bad volume mode", "services:\n  app:\n    image: a/b\n    volumes: [v:/data:rx]\n", "the mode is ro or rw"},
		{"a port out of range", "services:\n  app:\n    image: a/b\n    ports: ['70000:80']\n", "not a port number"},
		{"an IPv6 port binding", "services:\n  app:\n    image: a/b\n    ports: ['[::1]:80:80']\n", "IPv6"},
		{"ranges of different lengths", "services:\n  app:\n    image: a/b\n    ports: ['8000-8002:80-81']\n", "differ in length"},
		{"ports with host networking", "services:\n  app:\n    image: a/b\n    network_mode: host\n    ports: ['80:80']\n", "ports need network_mode: bridge"},
		{"a user-defined network", "services:\n  app:\n    image: a/b\n    network_mode: mynet\n", "network_mode \"mynet\""},
		{"an unknown restart policy", "services:\n  app:\n    image: a/b\n    restart: sometimes\n", "restart \"sometimes\""},
		{"a variable without a value", "services:\n  app:\n    image: a/b\n    environment: [TOKEN]\n", "\"TOKEN\" has no value"},
		{"a null variable", "services:\n  app:\n    image: a/b\n    environment:\n      TOKEN:\n", "TOKEN has no value"},
		{"a tiny memory limit", "services:\n  app:\n    image: a/b\n    mem_limit: 1m\n", "at least 6m"},
		{"a bad size", "services:\n  app:\n    image: a/b\n    mem_limit: lots\n", "want a size"},
		{"a negative cpu count", "services:\n  app:\n    image: a/b\n    cpus: -1\n", "cpus \"-1\""},
		{"an unknown dependency", "services:\n  app:\n    image: a/b\n    depends_on: [db]\n", "depends on \"db\""},
		{"a dependency cycle", "services:\n  aa:\n    image: a/b\n    depends_on: [bb]\n  bb:\n    image: a/b\n    depends_on: [aa]\n", "cycle: aa -> bb -> aa"},
		{"a health condition", "services:\n  aa:\n    image: a/b\n    depends_on:\n      bb: {condition: service_healthy}\n  bb:\n    image: a/b\n", "only service_started"},
		{"an unterminated quote", "services:\n  app:\n    image: a/b\n    command: echo 'hi\n", "unterminated single quote"},
		{"a volume driver", "services: {}\nvolumes:\n  v:\n    driver: nfs\n", "drivers and options are not supported"},
		{"the engine's own label", "services:\n  app:\n    image: a/b\n    labels: {org.bulkhead.app: x}\n", "set by the engine"},
		{"two documents", "services: {}\n---\nservices: {}\n", "more than one YAML document"},
		{"a list at the top", "- services\n", "want a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCommandStringsSplitLikeAShell(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a b  c", []string{"a", "b", "c"}},
		{`sh -c 'echo "$HOME"'`, []string{"sh", "-c", `echo "$HOME"`}},
		{`say "a \"quoted\" word" x\ y`, []string{"say", `a "quoted" word`, "x y"}},
		{`empty '' ""`, []string{"empty", "", ""}},
		{"", nil},
	} {
		got, err := splitWords(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(fullFile))
	f.Add([]byte("services:\n  app:\n    image: a/b\n    command: \"x 'y' \\\"z\"\n"))
	f.Add([]byte("services: {}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		af, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must translate, and in a stable order.
		if len(af.Order) != len(af.Services) {
			t.Fatalf("order %v for %d services", af.Order, len(af.Services))
		}
		for _, name := range af.Order {
			s, err := af.Services[name].Spec()
			if err != nil {
				t.Fatalf("service %s parsed but does not translate: %v", name, err)
			}
			if s.Config.Labels[LabelApp] != name {
				t.Fatalf("service %s labelled %q", name, s.Config.Labels[LabelApp])
			}
		}
	})
}
