package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/pull"
	"github.com/bulkhead-os/bulkhead/engine/store"
)

func (s *Server) imageCreate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from := q.Get("fromImage")
	if from == "" {
		writeError(w, http.StatusNotImplemented, "importing images (docker import / load) is not supported by this engine: pull from a registry")
		return
	}
	ref := from
	if tag := q.Get("tag"); tag != "" {
		if strings.HasPrefix(tag, "sha256:") {
			ref += "@" + tag
		} else {
			ref += ":" + tag
		}
	}
	if p := q.Get("platform"); p != "" {
		want := s.d.Puller.Platform()
		if pp, err := pull.ParsePlatform(p); err != nil || pp.Architecture != want.Architecture {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("platform %s: this device runs %s images only", p, pull.FormatPlatform(want)))
			return
		}
	}
	var before string
	if im, err := s.d.Store.Resolve(ref); err == nil {
		before = im.ID
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(v any) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(v)
		if flusher != nil {
			flusher.Flush()
		}
	}
	var lastDownload time.Time
	im, err := s.d.Puller.Pull(r.Context(), ref, pull.AuthFromHeader(r.Header.Get("X-Registry-Auth")), func(e pull.Event) {
		m := map[string]any{"status": e.Status}
		if e.ID != "" {
			m["id"] = e.ID
		}
		if e.Status == "Downloading" {
			// The CLI redraws a bar per message; a few a second is enough
			// and keeps a slow link from carrying progress chatter.
			if time.Since(lastDownload) < 200*time.Millisecond {
				return
			}
			lastDownload = time.Now()
			m["progressDetail"] = map[string]int64{"current": e.Current, "total": e.Total}
		} else {
			m["progressDetail"] = map[string]any{}
		}
		send(m)
	})
	if err != nil {
		msg := err.Error()
		if errors.Is(err, pull.ErrNoPlatform) {
			msg = "no matching manifest for " + pull.FormatPlatform(s.d.Puller.Platform()) + " in the manifest list entries: " + msg
		}
		send(map[string]any{"errorDetail": map[string]string{"message": msg}, "error": msg})
		return
	}
	shown := store.Familiar(ref)
	if !strings.Contains(ref, ":") && !strings.Contains(ref, "@") {
		shown += ":latest"
	}
	if before == im.ID {
		send(map[string]any{"status": "Status: Image is up to date for " + shown})
	} else {
		send(map[string]any{"status": "Status: Downloaded newer image for " + shown})
	}
}

func familiarAll(refs []string) []string {
	out := []string{}
	for _, r := range refs {
		out = append(out, store.Familiar(r))
	}
	return out
}

func (s *Server) imageSummary(im *store.Image, users map[string]int) map[string]any {
	cf, _ := im.ConfigFile()
	created := int64(0)
	labels := map[string]string{}
	if cf != nil {
		created = cf.Created.Unix()
		if cf.Config.Labels != nil {
			labels = cf.Config.Labels
		}
	}
	return map[string]any{
		"Id": im.ID, "ParentId": "", "RepoTags": familiarAll(im.RepoTags), "RepoDigests": familiarAll(im.RepoDigests),
		"Created": created, "Size": im.Size(), "SharedSize": -1, "VirtualSize": im.Size(), "Labels": labels,
		"Containers": users[im.ID],
	}
}

func (s *Server) imageList(w http.ResponseWriter, r *http.Request) {
	out := []map[string]any{}
	users := s.d.ImageUsers()
	filters := parseFilters(r.URL.Query().Get("filters"))
	for _, im := range s.d.Store.Images() {
		if refs := filters["reference"]; len(refs) > 0 {
			ok := false
			for _, t := range im.RepoTags {
				for _, f := range refs {
					if strings.HasPrefix(store.Familiar(t), f) || strings.HasPrefix(t, f) {
						ok = true
					}
				}
			}
			if !ok {
				continue
			}
		}
		if d := filters["dangling"]; len(d) > 0 && (d[0] == "true") != (len(im.RepoTags) == 0) {
			continue
		}
		out = append(out, s.imageSummary(im, users))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) imageGet(w http.ResponseWriter, r *http.Request) {
	rest := r.PathValue("rest")
	name, ok := strings.CutSuffix(rest, "/json")
	if !ok {
		s.unsupported(w, r)
		return
	}
	im, err := s.d.Store.Resolve(name)
	if err != nil {
		fail(w, err)
		return
	}
	cf, err := im.ConfigFile()
	if err != nil {
		fail(w, err)
		return
	}
	var diffIDs []string
	for _, l := range im.Layers {
		diffIDs = append(diffIDs, l.DiffID)
	}
	c := cf.Config
	writeJSON(w, http.StatusOK, map[string]any{
		"Id": im.ID, "RepoTags": familiarAll(im.RepoTags), "RepoDigests": familiarAll(im.RepoDigests), "Parent": "", "Comment": "",
		"Created": cf.Created.Format(time.RFC3339Nano), "DockerVersion": cf.DockerVersion, "Author": cf.Author,
		"Config": map[string]any{
			"Hostname": "", "User": c.User, "Env": c.Env, "Cmd": c.Cmd, "Entrypoint": c.Entrypoint, "WorkingDir": c.WorkingDir,
			"Labels": c.Labels, "ExposedPorts": c.ExposedPorts, "Volumes": c.Volumes, "StopSignal": c.StopSignal,
		},
		"Architecture": cf.Architecture, "Variant": cf.Variant, "Os": cf.OS, "Size": im.Size(),
		"GraphDriver": map[string]any{"Name": "overlay2", "Data": map[string]string{}},
		"RootFS":      map[string]any{"Type": "layers", "Layers": diffIDs},
		"Metadata":    map[string]any{"LastTagTime": im.Pulled.Format(time.RFC3339Nano)},
	})
}

func (s *Server) imageDelete(w http.ResponseWriter, r *http.Request) {
	rm, err := s.d.RemoveImage(r.PathValue("rest"), boolParam(r, "force"))
	if err != nil {
		fail(w, err)
		return
	}
	out := []map[string]string{}
	for _, u := range rm.Untagged {
		out = append(out, map[string]string{"Untagged": u})
	}
	for _, d := range rm.Deleted {
		out = append(out, map[string]string{"Deleted": d})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) imagePost(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(r.PathValue("rest"), "/tag")
	if !ok {
		s.unsupported(w, r)
		return
	}
	im, err := s.d.Store.Resolve(name)
	if err != nil {
		fail(w, err)
		return
	}
	target := r.URL.Query().Get("repo")
	if tag := r.URL.Query().Get("tag"); tag != "" {
		target += ":" + tag
	}
	ref, err := store.ParseRef(target)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.d.Store.Tag(ref.Name(), im.ID); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}
