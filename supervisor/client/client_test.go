package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// A device that refuses an upload answers after the header and closes the
// connection with the rest of the body unread; the client may then see
// only a reset. The recorded outcome must still reach the caller.
func TestUploadCutShortByARefusalReportsTheReason(t *testing.T) {
	var refused atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/status":
			var st api.Status
			st.Update.History = []updater.Outcome{{ID: "old", Result: updater.ResultRefused, Source: "upload", Reason: "an earlier refusal"}}
			if refused.Load() {
				st.Update.History = append([]updater.Outcome{{ID: "new", Result: updater.ResultRefused, Source: "upload",
					Reason: "update refused: bundle is for another board"}}, st.Update.History...)
			}
			json.NewEncoder(w).Encode(st)
		case r.Method == http.MethodPut && r.URL.Path == "/v1/update/bundle":
			io.CopyN(io.Discard, r.Body, 100)
			refused.Store(true)
			// Cut the connection without an answer, as a reset would.
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, err := client.TCP(srv.URL, "t").Upload(context.Background(), strings.NewReader(strings.Repeat("x", 1<<20)), 1<<20, client.UploadOptions{})
	var ae *client.APIError
	if !errors.As(err, &ae) || !ae.Refused() || !strings.Contains(ae.Message, "another board") {
		t.Fatalf("upload: %v, want 422 with the recorded reason", err)
	}
}

func TestUploadConnectionErrorWithoutAnOutcomeStaysAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			json.NewEncoder(w).Encode(api.Status{})
			return
		}
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	}))
	defer srv.Close()
	_, err := client.TCP(srv.URL, "t").Upload(context.Background(), strings.NewReader("bundle"), 6, client.UploadOptions{})
	var ae *client.APIError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("upload cut without an outcome: %v, want the connection error", err)
	}
}
