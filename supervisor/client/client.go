// Package client talks to a device's supervisor API (package api): over
// the unix socket on the device (bulkheadctl) or over TCP with the bearer
// token from the device's device.yaml (the workstation's update command,
// integration tests).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// Client is a device API client.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// Unix returns a client for the API socket at path (api.DefaultSocket on
// a device).
func Unix(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{base: "http://bulkhead", http: &http.Client{Transport: tr}}
}

// TCP returns a client for a device at addr ("host" or "host:port"; the
// port defaults to api.DefaultPort, or a full http:// URL) with a bearer
// token.
func TCP(addr, token string) *Client {
	base := addr
	if !strings.HasPrefix(addr, "http://") && !strings.HasPrefix(addr, "https://") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(strings.Trim(addr, "[]"), api.DefaultPort)
		}
		base = "http://" + addr
	}
	return &Client{base: strings.TrimSuffix(base, "/"), token: token, http: &http.Client{
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			ResponseHeaderTimeout: 0, // an upload's answer comes after the install
		},
	}}
}

// APIError is a non-2xx answer.
type APIError struct {
	Code    int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("device API: %d %s", e.Code, e.Message) }

// Conflict reports a 409 (busy, or no trial to act on).
func (e *APIError) Conflict() bool { return e.Code == http.StatusConflict }

// Refused reports a 422 (the bundle was refused).
func (e *APIError) Refused() bool { return e.Code == http.StatusUnprocessableEntity }

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if size >= 0 && body != nil {
		req.ContentLength = size
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("device API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("device API %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &APIError{Code: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("device API %s %s: %w", method, path, err)
		}
	}
	return nil
}

// Status returns GET /v1/status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, -1, &s)
}

// Health returns nil when the supervisor answers GET /v1/health.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/v1/health", nil, -1, nil)
}

// StartUpdate asks the device to fetch and install a bundle from a URL,
// a path on the device or a registry reference.
func (c *Client) StartUpdate(ctx context.Context, req api.UpdateRequest) (api.UpdateResponse, error) {
	b, _ := json.Marshal(req)
	var r api.UpdateResponse
	return r, c.do(ctx, http.MethodPost, "/v1/update", bytes.NewReader(b), int64(len(b)), &r)
}

// UploadOptions tune Upload.
type UploadOptions struct {
	Force, NoReboot bool
}

// Upload streams a bundle to the device, which installs it as it arrives.
// It returns when the device has verified the slot and armed the trial.
// size is the bundle's length, or -1 to send it chunked.
//
// A device that refuses a bundle does so after its header, answers 422 and
// closes the connection while the rest is still on its way; the client may
// then see only the reset connection. Upload therefore reads the device's
// update history first, and after a connection error returns the outcome
// the device recorded for this upload as an *APIError (422 refused, 500
// failed), so the reason reaches the user either way.
func (c *Client) Upload(ctx context.Context, r io.Reader, size int64, o UploadOptions) (api.UpdateResponse, error) {
	before, berr := c.Status(ctx)
	resp, err := c.upload(ctx, r, size, o)
	var ae *APIError
	if err == nil || errors.As(err, &ae) || berr != nil || ctx.Err() != nil {
		return resp, err
	}
	if oc, ok := c.newUploadOutcome(ctx, before.Update.History); ok {
		code := http.StatusInternalServerError
		if oc.Result == updater.ResultRefused {
			code = http.StatusUnprocessableEntity
		}
		return api.UpdateResponse{ID: oc.ID}, &APIError{Code: code, Message: oc.Reason}
	}
	return resp, err
}

// newUploadOutcome returns the outcome of an upload that is not in
// before: the one the device recorded for the upload that just failed.
func (c *Client) newUploadOutcome(ctx context.Context, before []updater.Outcome) (updater.Outcome, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return updater.Outcome{}, false
	}
	known := map[string]bool{}
	for _, o := range before {
		known[o.ID] = true
	}
	for _, o := range st.Update.History {
		if !known[o.ID] && o.Source == source.KindUpload && (o.Result == updater.ResultRefused || o.Result == updater.ResultFailed) {
			return o, true
		}
	}
	return updater.Outcome{}, false
}

func (c *Client) upload(ctx context.Context, r io.Reader, size int64, o UploadOptions) (api.UpdateResponse, error) {
	q := url.Values{}
	if o.Force {
		q.Set("force", "1")
	}
	if o.NoReboot {
		q.Set("no_reboot", "1")
	}
	path := "/v1/update/bundle"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var resp api.UpdateResponse
	return resp, c.do(ctx, http.MethodPut, path, r, size, &resp)
}

func (c *Client) post(ctx context.Context, path string) (api.UpdateResponse, error) {
	var r api.UpdateResponse
	return r, c.do(ctx, http.MethodPost, path, nil, -1, &r)
}

// Cancel stops a download in progress.
func (c *Client) Cancel(ctx context.Context) (api.UpdateResponse, error) {
	return c.post(ctx, "/v1/update/cancel")
}

// MarkGood commits the running trial slot now.
func (c *Client) MarkGood(ctx context.Context) (api.UpdateResponse, error) {
	return c.post(ctx, "/v1/boot/mark-good")
}

// Abandon gives up the pending or running trial.
func (c *Client) Abandon(ctx context.Context) (api.UpdateResponse, error) {
	return c.post(ctx, "/v1/boot/abandon")
}

// Reboot reboots the device.
func (c *Client) Reboot(ctx context.Context) (api.UpdateResponse, error) {
	return c.post(ctx, "/v1/reboot")
}

// ErrTimeout is returned by Wait when the outcome did not come in time.
var ErrTimeout = errors.New("timed out waiting for the update outcome")

// WaitOutcome polls the device until update id has an outcome, and returns
// it. Connection errors are expected (the device reboots, perhaps twice)
// and only reported to progress, which is called after every poll with the
// status or the error. ctx bounds the wait.
func (c *Client) WaitOutcome(ctx context.Context, id string, every time.Duration, progress func(api.Status, error)) (updater.Outcome, error) {
	if every <= 0 {
		every = time.Second
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := c.Status(pctx)
		cancel()
		if progress != nil {
			progress(st, err)
		}
		if err == nil {
			for _, o := range st.Update.History {
				if o.ID == id {
					return o, nil
				}
			}
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == http.StatusUnauthorized {
			return updater.Outcome{}, err
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return updater.Outcome{}, fmt.Errorf("%w of update %s: %v", ErrTimeout, id, ctx.Err())
		case <-t.C:
		}
	}
}
