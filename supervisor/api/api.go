// Package api is the supervisor's device API: JSON over HTTP, served on a
// unix socket (root only, no token: the socket's file mode is the access
// control) and, when the device config asks for it, on TCP with a bearer
// token. docs/update-protocol.md lists the endpoints; the types here are
// the wire format the client package decodes.
//
// The API decides nothing: every request is passed to the updater, whose
// errors map to status codes (ErrBusy and ErrNotInTrial 409, ErrRefused
// 422, others 500).
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// DefaultSocket is the unix socket of the device API.
const DefaultSocket = "/run/bulkhead/supervisor.sock"

// DefaultPort is the TCP port clients assume when a device address has
// none (device.yaml's api.listen should use it).
const DefaultPort = "7070"

// Release is the running system (release.json).
type Release struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Board     string `json:"board"`
	Arch      string `json:"arch"`
	Kernel    string `json:"kernel"`
	BuildTime int64  `json:"build_time"`
}

// Boot is what the bootloader told this boot.
type Boot struct {
	Slot  bootloader.Slot `json:"slot"`
	Trial bool            `json:"trial"`
}

// Status is GET /v1/status.
type Status struct {
	Hostname string  `json:"hostname"`
	Release  Release `json:"release"`
	Boot     Boot    `json:"boot"`
	// BootState is the boot-state record; BootStateError says why it
	// could not be read.
	BootState      *bootloader.State `json:"boot_state,omitempty"`
	BootStateError string            `json:"boot_state_error,omitempty"`
	Update         updater.Status    `json:"update"`
	UptimeSeconds  int64             `json:"uptime_seconds"`
	// Supervisor is the supervisor process itself.
	Supervisor *Process `json:"supervisor,omitempty"`
}

// Process describes a running process by its memory use (Linux
// /proc/<pid>/status VmRSS and VmHWM).
type Process struct {
	PID          int   `json:"pid"`
	RSSBytes     int64 `json:"rss_bytes"`
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
}

// UpdateRequest is POST /v1/update.
type UpdateRequest struct {
	// Source is an http(s):// URL, an absolute file path on the device or
	// a registry reference (see source.ParseSpec).
	Source   string `json:"source"`
	Force    bool   `json:"force,omitempty"`
	NoReboot bool   `json:"no_reboot,omitempty"`
}

// UpdateResponse answers POST /v1/update and PUT /v1/update/bundle.
type UpdateResponse struct {
	ID    string        `json:"id"`
	Phase updater.Phase `json:"phase"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Updater is the part of *updater.Updater the API drives.
type Updater interface {
	Status() updater.Status
	Start(ctx context.Context, req updater.Request) (string, error)
	Install(ctx context.Context, req updater.Request, r io.Reader, size int64) error
	Cancel() error
	MarkGood() error
	Abandon() error
	RebootNow(why string) error
}

// Server serves the API.
type Server struct {
	Updater Updater
	// Info fills in the parts of Status the updater does not know.
	Info func() Status
	// Ctx bounds background work started by requests (an update from a
	// URL outlives its request).
	Ctx context.Context
	Log *slog.Logger
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("POST /v1/update", s.startUpdate)
	mux.HandleFunc("PUT /v1/update/bundle", s.upload)
	mux.HandleFunc("POST /v1/update/cancel", s.op(func() error { return s.Updater.Cancel() }))
	mux.HandleFunc("POST /v1/boot/mark-good", s.op(func() error { return s.Updater.MarkGood() }))
	mux.HandleFunc("POST /v1/boot/abandon", s.op(func() error { return s.Updater.Abandon() }))
	mux.HandleFunc("POST /v1/reboot", s.op(func() error { return s.Updater.RebootNow("requested through the API") }))
	return mux
}

func (s *Server) ctx() context.Context {
	if s.Ctx != nil {
		return s.Ctx
	}
	return context.Background()
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	var st Status
	if s.Info != nil {
		st = s.Info()
	}
	st.Update = s.Updater.Status()
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) startUpdate(w http.ResponseWriter, r *http.Request) {
	var req UpdateRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("update request: %w: send {\"source\": \"<url|path|registry ref>\"}", err))
		return
	}
	spec, err := source.ParseSpec(req.Source)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	id, err := s.Updater.Start(s.ctx(), updater.Request{Source: spec, Force: req.Force, NoReboot: req.NoReboot})
	if err != nil {
		writeError(w, errStatus(err), err)
		return
	}
	writeJSON(w, http.StatusAccepted, UpdateResponse{ID: id, Phase: s.Updater.Status().Phase})
}

// upload installs the request body as it arrives: the bundle is never
// stored on the device. The answer comes when the slot is verified and the
// trial armed (the reboot follows, a moment later, unless no_reboot).
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := updater.Request{
		Source:   source.Spec{Kind: source.KindUpload},
		Force:    q.Get("force") == "1" || q.Get("force") == "true",
		NoReboot: q.Get("no_reboot") == "1" || q.Get("no_reboot") == "true",
	}
	err := s.Updater.Install(r.Context(), req, r.Body, r.ContentLength)
	st := s.Updater.Status()
	if err != nil {
		writeError(w, errStatus(err), err)
		return
	}
	resp := UpdateResponse{Phase: st.Phase}
	if st.Update != nil {
		resp.ID = st.Update.ID
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) op(f func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := f(); err != nil {
			writeError(w, errStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, UpdateResponse{Phase: s.Updater.Status().Phase})
	}
}

func errStatus(err error) int {
	switch {
	case errors.Is(err, updater.ErrBusy), errors.Is(err, updater.ErrNotInTrial):
		return http.StatusConflict
	case errors.Is(err, updater.ErrRefused):
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, Error{Error: err.Error()})
}

// RequireToken wraps h so that every request must carry
// "Authorization: Bearer <token>". The comparison is constant-time over
// SHA-256 digests, so neither the token's bytes nor its length leak
// through timing.
func RequireToken(token string, h http.Handler) http.Handler {
	want := sha256.Sum256([]byte("Bearer " + token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bulkhead"`)
			writeError(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token: use the api.token of the device's device.yaml"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func newHTTPServer(h http.Handler) *http.Server {
	// No overall read or write timeout: uploads of a few hundred MB over a
	// slow link take minutes. Headers must arrive promptly.
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
}

// ListenUnix creates the socket at path, readable and writable by root
// only, replacing a stale one from a previous run.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	return l, nil
}

// Serve serves the API on l until ctx ends. A non-empty token requires it
// from every client (TCP); an empty one serves without authentication and
// is only for the unix socket.
func (s *Server) Serve(ctx context.Context, l net.Listener, token string) error {
	h := s.Handler()
	if token != "" {
		h = RequireToken(token, h)
	}
	srv := newHTTPServer(h)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ErrNoToken: a TCP listener was asked for without a token.
var ErrNoToken = errors.New("refusing to serve the device API on TCP without a token")

// ListenTCP listens on addr for the token-protected API. It refuses an
// empty token: the device API can rewrite the OS.
func ListenTCP(addr, token string) (net.Listener, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: set api.token in device.yaml", ErrNoToken)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("api on %s: %w", addr, err)
	}
	return l, nil
}
