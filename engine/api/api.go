// Package api serves the subset of the Docker Engine API that the docker
// CLI needs for everyday work (version, info, pull, images, create, run -d,
// start, stop, restart, kill, rm, ps, logs -f, inspect, exec, volumes,
// networks, system df) on a unix socket.
//
// It owns docker's wire format: paths, query parameters, JSON shapes,
// status codes, multiplexed log and exec streams. It must not hold state
// or make decisions: everything goes to the daemon. Endpoints it does not
// implement answer at once with 501 and a message saying so, never hang.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/daemon"
	"github.com/bulkhead-os/bulkhead/engine/store"
	"github.com/bulkhead-os/bulkhead/engine/volume"
)

// Version is the Docker Engine API version this server speaks. Clients
// negotiate down to it from the API-Version header of /_ping.
const (
	Version    = "1.47"
	MinVersion = "1.24"
)

// Server is the HTTP handler.
type Server struct {
	d       *daemon.Daemon
	version string
	mux     *http.ServeMux
}

// New builds the handler.
func New(d *daemon.Daemon, engineVersion string) *Server {
	s := &Server{d: d, version: engineVersion, mux: http.NewServeMux()}
	s.routes()
	return s
}

var versionPrefix = regexp.MustCompile(`^/v[0-9]+\.[0-9]+/`)

// ServeHTTP strips the /v1.xx prefix and dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if loc := versionPrefix.FindStringIndex(r.URL.Path); loc != nil {
		r.URL.Path = r.URL.Path[loc[1]-1:]
		r.URL.RawPath = ""
	}
	w.Header().Set("Api-Version", Version)
	w.Header().Set("Server", "Bulkhead-Engine/"+s.version+" (linux)")
	w.Header().Set("Ostype", "linux")
	slog.Debug("api", "method", r.Method, "path", r.URL.Path)
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /_ping", s.ping)
	m.HandleFunc("HEAD /_ping", s.ping)
	m.HandleFunc("GET /version", s.versionInfo)
	m.HandleFunc("GET /info", s.info)
	m.HandleFunc("GET /system/df", s.systemDF)

	m.HandleFunc("POST /images/create", s.imageCreate)
	m.HandleFunc("GET /images/json", s.imageList)
	m.HandleFunc("GET /images/{rest...}", s.imageGet)
	m.HandleFunc("DELETE /images/{rest...}", s.imageDelete)
	m.HandleFunc("POST /images/{rest...}", s.imagePost)

	m.HandleFunc("POST /containers/create", s.containerCreate)
	m.HandleFunc("GET /containers/json", s.containerList)
	m.HandleFunc("GET /containers/{id}/json", s.containerInspect)
	m.HandleFunc("POST /containers/{id}/start", s.containerStart)
	m.HandleFunc("POST /containers/{id}/stop", s.containerStop)
	m.HandleFunc("POST /containers/{id}/restart", s.containerRestart)
	m.HandleFunc("POST /containers/{id}/kill", s.containerKill)
	m.HandleFunc("POST /containers/{id}/wait", s.containerWait)
	m.HandleFunc("DELETE /containers/{id}", s.containerDelete)
	m.HandleFunc("GET /containers/{id}/logs", s.containerLogs)
	m.HandleFunc("POST /containers/{id}/exec", s.execCreate)
	m.HandleFunc("POST /containers/{id}/resize", s.noop)
	m.HandleFunc("POST /exec/{id}/start", s.execStart)
	m.HandleFunc("POST /exec/{id}/resize", s.noop)
	m.HandleFunc("GET /exec/{id}/json", s.execInspect)

	m.HandleFunc("GET /volumes", s.volumeList)
	m.HandleFunc("POST /volumes/create", s.volumeCreate)
	m.HandleFunc("GET /volumes/{name}", s.volumeInspect)
	m.HandleFunc("DELETE /volumes/{name}", s.volumeDelete)

	m.HandleFunc("GET /networks", s.networkList)
	m.HandleFunc("GET /networks/{id}", s.networkInspect)

	m.HandleFunc("/", s.unsupported)
}

func (s *Server) unsupported(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotImplemented, fmt.Sprintf("%s %s is not supported by this engine (Bulkhead's engine implements the Docker API subset for pull, images, create, run -d, start, stop, restart, kill, rm, ps, logs, inspect, exec, volumes, networks and system df)", r.Method, r.URL.Path))
}

func (s *Server) noop(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache, no-store, must-revalidate")
	w.Header().Set("Docker-Experimental", "false")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Length", "0")
		return
	}
	w.Write([]byte("OK"))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"message": msg})
}

// fail maps daemon errors to docker's status codes.
func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, daemon.ErrNotModified):
		w.WriteHeader(http.StatusNotModified)
		return
	case errors.Is(err, daemon.ErrNotFound), errors.Is(err, daemon.ErrNoSuchImage), errors.Is(err, store.ErrNotFound), errors.Is(err, volume.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, daemon.ErrConflict), errors.Is(err, store.ErrInUse), errors.Is(err, volume.ErrInUse):
		code = http.StatusConflict
	case errors.Is(err, daemon.ErrInvalid):
		code = http.StatusBadRequest
	}
	msg := err.Error()
	// The CLI looks for docker's own wording to decide to pull.
	if errors.Is(err, daemon.ErrNoSuchImage) || errors.Is(err, store.ErrNotFound) {
		msg = "No such image: " + strings.TrimPrefix(strings.TrimPrefix(msg, daemon.ErrNoSuchImage.Error()+": "), store.ErrNotFound.Error()+": ")
	}
	if errors.Is(err, daemon.ErrNotFound) {
		msg = strings.TrimPrefix(msg, daemon.ErrNotFound.Error()+": ")
		if strings.HasPrefix(msg, "no such container") {
			msg = "No such container" + strings.TrimPrefix(msg, "no such container")
		}
	}
	writeError(w, code, msg)
}

func decode(r *http.Request, v any) error {
	if r.Body == nil || r.ContentLength == 0 {
		return nil
	}
	if err := json.NewDecoder(r.Body).Decode(v); err != nil && !errors.Is(err, ioEOF) {
		return fmt.Errorf("%w: request body: %v", daemon.ErrInvalid, err)
	}
	return nil
}

func boolParam(r *http.Request, name string) bool {
	v := r.URL.Query().Get(name)
	return v == "1" || strings.EqualFold(v, "true")
}

// Listen opens the unix socket at path with mode 0600: the API gives root
// on the device to whoever can reach it.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(dirOf(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another engine already listens on %s: stop it first", path)
	}
	os.Remove(path)
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func dirOf(p string) string {
	if i := strings.LastIndex(p, "/"); i > 0 {
		return p[:i]
	}
	return "."
}
