package api

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/daemon"
	"github.com/bulkhead-os/bulkhead/engine/logs"
)

type createBody struct {
	daemon.Config
	HostConfig daemon.HostConfig
}

func (s *Server) containerCreate(w http.ResponseWriter, r *http.Request) {
	var body createBody
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	if p := r.URL.Query().Get("platform"); p != "" {
		want := s.d.Puller.Platform()
		if !strings.HasPrefix(p, want.OS+"/"+want.Architecture) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("platform %s: this device runs %s/%s containers only", p, want.OS, want.Architecture))
			return
		}
	}
	c, warnings, err := s.d.Create(r.URL.Query().Get("name"), body.Config, body.HostConfig)
	if err != nil {
		fail(w, err)
		return
	}
	if warnings == nil {
		warnings = []string{}
	}
	writeJSON(w, http.StatusCreated, map[string]any{"Id": c.ID, "Warnings": warnings})
}

func (s *Server) containerStart(w http.ResponseWriter, r *http.Request) {
	if err := s.d.Start(r.Context(), r.PathValue("id")); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func timeoutParam(r *http.Request) *int {
	if v := r.URL.Query().Get("t"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return &n
		}
	}
	return nil
}

func (s *Server) containerStop(w http.ResponseWriter, r *http.Request) {
	// A stop outlives an impatient client: the container must end anyway.
	if err := s.d.Stop(context.WithoutCancel(r.Context()), r.PathValue("id"), timeoutParam(r)); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) containerRestart(w http.ResponseWriter, r *http.Request) {
	if err := s.d.Restart(context.WithoutCancel(r.Context()), r.PathValue("id"), timeoutParam(r)); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) containerKill(w http.ResponseWriter, r *http.Request) {
	if err := s.d.Kill(r.Context(), r.PathValue("id"), r.URL.Query().Get("signal")); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) containerWait(w http.ResponseWriter, r *http.Request) {
	if _, err := s.d.Inspect(r.PathValue("id")); err != nil {
		fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush() // the CLI waits for the headers before it starts the container
	}
	code, err := s.d.Wait(r.Context(), r.PathValue("id"))
	resp := map[string]any{"StatusCode": code, "Error": nil}
	if err != nil {
		resp["Error"] = map[string]string{"Message": err.Error()}
	}
	writeJSONBody(w, resp)
}

func (s *Server) containerDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.d.Remove(context.WithoutCancel(r.Context()), r.PathValue("id"), boolParam(r, "force"), boolParam(r, "v")); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func command(c *daemon.Container) string {
	return strings.TrimSpace(c.Path + " " + strings.Join(c.Args, " "))
}

func status(c *daemon.Container) string {
	now := time.Now()
	switch {
	case c.State.Restarting:
		return fmt.Sprintf("Restarting (%d) %s ago", c.State.ExitCode, humanDuration(now.Sub(c.State.FinishedAt)))
	case c.State.Running:
		return "Up " + humanDuration(now.Sub(c.State.StartedAt))
	case c.State.Status == "created":
		return "Created"
	case c.State.Status == "removing":
		return "Removal In Progress"
	}
	return fmt.Sprintf("Exited (%d) %s ago", c.State.ExitCode, humanDuration(now.Sub(c.State.FinishedAt)))
}

func stateName(c *daemon.Container) string {
	if c.State.Restarting {
		return "restarting"
	}
	if c.State.Running {
		return "running"
	}
	if c.State.Status == "" {
		return "created"
	}
	return c.State.Status
}

type portJSON struct {
	IP          string `json:"IP,omitempty"`
	PrivatePort uint16
	PublicPort  uint16 `json:"PublicPort,omitempty"`
	Type        string
}

func ports(c *daemon.Container) []portJSON {
	out := []portJSON{}
	published := map[string]bool{}
	for _, p := range c.Ports {
		ip := "0.0.0.0"
		if p.HostIP != nil && !p.HostIP.IsUnspecified() {
			ip = p.HostIP.String()
		}
		out = append(out, portJSON{IP: ip, PrivatePort: p.ContainerPort, PublicPort: p.HostPort, Type: p.Proto})
		published[strconv.Itoa(int(p.ContainerPort))+"/"+p.Proto] = true
	}
	for e := range c.Config.ExposedPorts {
		if published[e] {
			continue
		}
		n, proto, _ := strings.Cut(e, "/")
		port, _ := strconv.Atoi(n)
		if proto == "" {
			proto = "tcp"
		}
		out = append(out, portJSON{PrivatePort: uint16(port), Type: proto})
	}
	return out
}

func (s *Server) networks(c *daemon.Container) map[string]any {
	mode := c.HostConfig.NetworkMode
	ep := map[string]any{"NetworkID": networkID(mode), "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}
	if c.Endpoint != nil {
		ep["EndpointID"] = networkID(c.ID)
		ep["Gateway"] = c.Endpoint.Gateway.String()
		ep["IPAddress"] = c.Endpoint.IP.String()
		ep["IPPrefixLen"] = c.Endpoint.PrefixLen
		ep["MacAddress"] = c.Endpoint.MAC.String()
	}
	return map[string]any{mode: ep}
}

func mountsJSON(c *daemon.Container) []map[string]any {
	out := []map[string]any{}
	for _, m := range c.MountPoints {
		j := map[string]any{"Type": m.Type, "Source": m.Source, "Destination": m.Destination, "RW": m.RW, "Mode": "", "Propagation": "rprivate"}
		if m.Type == "volume" {
			j["Name"] = m.Name
			j["Driver"] = "local"
			j["Propagation"] = ""
		}
		out = append(out, j)
	}
	return out
}

func (s *Server) summary(c *daemon.Container) map[string]any {
	return map[string]any{
		"Id": c.ID, "Names": []string{"/" + c.Name}, "Image": c.Image, "ImageID": c.ImageID,
		"Command": command(c), "Created": c.Created.Unix(), "Ports": ports(c), "Labels": nonNil(c.Config.Labels),
		"State": stateName(c), "Status": status(c),
		"HostConfig":      map[string]any{"NetworkMode": c.HostConfig.NetworkMode},
		"NetworkSettings": map[string]any{"Networks": s.networks(c)},
		"Mounts":          mountsJSON(c),
	}
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func (s *Server) containerList(w http.ResponseWriter, r *http.Request) {
	all := boolParam(r, "all")
	withSize := boolParam(r, "size")
	filters := parseFilters(r.URL.Query().Get("filters"))
	out := []map[string]any{}
	for _, c := range s.d.Containers() {
		if !all && !c.State.Running && !c.State.Restarting {
			continue
		}
		if !matchFilters(&c, filters) {
			continue
		}
		j := s.summary(&c)
		if withSize {
			j["SizeRw"] = s.d.ContainerSize(c.ID)
		}
		out = append(out, j)
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 && n < len(out) {
		out = out[:n]
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) containerInspect(w http.ResponseWriter, r *http.Request) {
	c, err := s.d.Inspect(r.PathValue("id"))
	if err != nil {
		fail(w, err)
		return
	}
	dir := s.d.Dir(c.ID)
	portMap := map[string][]map[string]string{}
	for _, p := range c.Ports {
		key := fmt.Sprintf("%d/%s", p.ContainerPort, p.Proto)
		ip := "0.0.0.0"
		if p.HostIP != nil && !p.HostIP.IsUnspecified() {
			ip = p.HostIP.String()
		}
		portMap[key] = append(portMap[key], map[string]string{"HostIp": ip, "HostPort": strconv.Itoa(int(p.HostPort))})
	}
	for e := range c.Config.ExposedPorts {
		if _, ok := portMap[e]; !ok {
			portMap[e] = nil
		}
	}
	ns := map[string]any{
		"Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": portMap, "Networks": s.networks(&c),
		"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "",
	}
	if c.Endpoint != nil {
		ns["SandboxKey"] = c.Endpoint.Netns
		ns["IPAddress"] = c.Endpoint.IP.String()
		ns["IPPrefixLen"] = c.Endpoint.PrefixLen
		ns["Gateway"] = c.Endpoint.Gateway.String()
		ns["MacAddress"] = c.Endpoint.MAC.String()
	}
	cfg := c.Config
	cfg.Image = c.Image
	hc := c.HostConfig
	writeJSON(w, http.StatusOK, map[string]any{
		"Id": c.ID, "Created": c.Created.Format(time.RFC3339Nano), "Path": c.Path, "Args": nonNilSlice(c.Args),
		"State": map[string]any{
			"Status": stateName(&c), "Running": c.State.Running, "Paused": false, "Restarting": c.State.Restarting,
			"OOMKilled": c.State.OOMKilled, "Dead": c.State.Dead, "Pid": c.State.Pid, "ExitCode": c.State.ExitCode,
			"Error": c.State.Error, "StartedAt": c.State.StartedAt.Format(time.RFC3339Nano), "FinishedAt": c.State.FinishedAt.Format(time.RFC3339Nano),
		},
		"Image": c.ImageID, "ResolvConfPath": dir + "/resolv.conf", "HostnamePath": dir + "/hostname", "HostsPath": dir + "/hosts",
		"LogPath": c.LogPath, "Name": "/" + c.Name, "RestartCount": c.RestartCount, "Driver": "overlay2", "Platform": "linux",
		"MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": nil,
		"HostConfig":      hc,
		"GraphDriver":     map[string]any{"Name": "overlay2", "Data": map[string]string{"UpperDir": dir + "/upper", "WorkDir": dir + "/work", "MergedDir": dir + "/rootfs"}},
		"Mounts":          mountsJSON(&c),
		"Config":          cfg,
		"NetworkSettings": ns,
	})
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// stdcopy frames: an 8-byte header (stream, 0, 0, 0, big-endian length)
// before each chunk, so one connection carries stdout and stderr. The two
// writers of a connection share one lock so frames never interleave.
type muxWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	flush  func()
	stream byte
	raw    bool
}

func (m *muxWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.raw {
		var hdr [8]byte
		hdr[0] = m.stream
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(p)))
		if _, err := m.w.Write(hdr[:]); err != nil {
			return 0, err
		}
	}
	n, err := m.w.Write(p)
	if m.flush != nil {
		m.flush()
	}
	return n, err
}

func streams(w io.Writer, flush func(), raw bool) (stdout, stderr *muxWriter) {
	mu := &sync.Mutex{}
	return &muxWriter{mu: mu, w: w, flush: flush, stream: 1, raw: raw}, &muxWriter{mu: mu, w: w, flush: flush, stream: 2, raw: raw}
}

func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	c, err := s.d.Inspect(r.PathValue("id"))
	if err != nil {
		fail(w, err)
		return
	}
	q := r.URL.Query()
	o := logs.Options{Stdout: boolParam(r, "stdout"), Stderr: boolParam(r, "stderr"), Tail: -1, Follow: boolParam(r, "follow")}
	if !o.Stdout && !o.Stderr {
		writeError(w, http.StatusBadRequest, "you must choose at least one stream (stdout or stderr)")
		return
	}
	if t := q.Get("tail"); t != "" && t != "all" {
		if n, err := strconv.Atoi(t); err == nil && n >= 0 {
			o.Tail = n
		}
	}
	o.Since = parseUnixTime(q.Get("since"))
	o.Until = parseUnixTime(q.Get("until"))
	if o.Follow {
		ch, err := s.d.Exited(c.ID)
		if err != nil {
			fail(w, err)
			return
		}
		o.Done = ch
	}
	timestamps := boolParam(r, "timestamps")
	w.Header().Set("Content-Type", "application/vnd.docker.multiplexed-stream")
	if c.Config.Tty {
		w.Header().Set("Content-Type", "application/vnd.docker.raw-stream")
	}
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	flush()
	stdout, stderr := streams(w, flush, c.Config.Tty)
	logs.Read(r.Context(), s.d.Dir(c.ID)+"/logs", o, func(e logs.Entry) error {
		line := e.Log
		if timestamps {
			line = e.Time.Format(time.RFC3339Nano) + " " + line
		}
		if e.Stream == "stderr" {
			_, err := stderr.Write([]byte(line))
			return err
		}
		_, err := stdout.Write([]byte(line))
		return err
	})
}

func parseUnixTime(s string) time.Time {
	if s == "" || s == "0" {
		return time.Time{}
	}
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}
	}
	var ns int64
	if frac != "" {
		frac = (frac + "000000000")[:9]
		ns, _ = strconv.ParseInt(frac, 10, 64)
	}
	return time.Unix(n, ns)
}

func (s *Server) execCreate(w http.ResponseWriter, r *http.Request) {
	var cfg daemon.ExecConfig
	if err := decode(r, &cfg); err != nil {
		fail(w, err)
		return
	}
	id, err := s.d.ExecCreate(r.PathValue("id"), cfg)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"Id": id})
}

func (s *Server) execInspect(w http.ResponseWriter, r *http.Request) {
	st, err := s.d.ExecInspect(r.PathValue("id"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"ID": st.ID, "ContainerID": st.ContainerID, "Running": st.Running, "ExitCode": st.ExitCode, "Pid": st.Pid,
		"OpenStdin": st.Config.AttachStdin, "OpenStdout": st.Config.AttachStdout, "OpenStderr": st.Config.AttachStderr,
		"ProcessConfig": map[string]any{"tty": st.Config.Tty, "entrypoint": first(st.Config.Cmd), "arguments": rest(st.Config.Cmd), "privileged": st.Config.Privileged, "user": st.Config.User},
		"CanRemove":     false, "DetachKeys": "",
	})
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func rest(s []string) []string {
	if len(s) < 2 {
		return []string{}
	}
	return s[1:]
}

func (s *Server) execStart(w http.ResponseWriter, r *http.Request) {
	var body struct{ Detach, Tty bool }
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	id := r.PathValue("id")
	st, err := s.d.ExecInspect(id)
	if err != nil {
		fail(w, err)
		return
	}
	if body.Detach {
		go s.d.ExecStart(context.Background(), id, nil, nil, nil)
		w.WriteHeader(http.StatusOK)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, http.StatusInternalServerError, "connection cannot be hijacked")
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	ctype := "application/vnd.docker.multiplexed-stream"
	if body.Tty || st.Config.Tty {
		ctype = "application/vnd.docker.raw-stream"
	}
	if strings.EqualFold(r.Header.Get("Upgrade"), "tcp") {
		fmt.Fprintf(conn, "HTTP/1.1 101 UPGRADED\r\nContent-Type: %s\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nApi-Version: %s\r\n\r\n", ctype, Version)
	} else {
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nApi-Version: %s\r\n\r\n", ctype, Version)
	}
	stdout, stderr := streams(conn, nil, body.Tty || st.Config.Tty)
	var stdin io.Reader
	if st.Config.AttachStdin {
		stdin = io.MultiReader(buf.Reader, conn)
	}
	var outW, errW io.Writer
	if st.Config.AttachStdout {
		outW = stdout
	}
	if st.Config.AttachStderr {
		errW = stderr
	}
	if err := s.d.ExecStart(context.WithoutCancel(r.Context()), id, stdin, outW, errW); err != nil {
		stderr.Write([]byte(err.Error() + "\n"))
	}
	// Half-close so the client sees EOF on the output, then reads the exit
	// code from /exec/{id}/json.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
