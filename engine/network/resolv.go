package network

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"strings"
)

// ResolvConf builds a container's /etc/resolv.conf from the host's file.
// The device's resolver file may not exist (no DHCP lease yet, or a
// read-only root without one), and a host that runs a local cache lists
// 127.0.0.x, which a container in its own network namespace cannot reach:
// in both cases the fallback servers are used, as docker does.
func ResolvConf(hostFile string, fallback []string, hostNetwork bool) []byte {
	data, err := os.ReadFile(hostFile)
	if err != nil {
		data = nil
	}
	var out bytes.Buffer
	servers := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "nameserver" {
			ip := net.ParseIP(fields[1])
			if ip == nil || (!hostNetwork && ip.IsLoopback()) {
				continue
			}
			servers++
		}
		out.WriteString(line + "\n")
	}
	if servers == 0 {
		for _, s := range fallback {
			out.WriteString("nameserver " + s + "\n")
		}
	}
	return out.Bytes()
}

// DefaultDNS is used when the host offers no usable name server.
var DefaultDNS = []string{"8.8.8.8", "8.8.4.4"}
