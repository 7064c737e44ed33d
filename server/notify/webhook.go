package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/backstop-ha/backstop"
)

// Sign returns the Standard Webhooks signature header value of a message:
// "v1," and the base64 HMAC-SHA256, keyed with the secret's decoded
// bytes, of "<msgID>.<timestamp>.<body>".
func Sign(secret, msgID string, timestamp int64, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, backstop.WebhookSecretPrefix))
	if err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", msgID, timestamp)
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// SignAll returns the webhook-signature header value for several secrets
// (a rotation's overlap): their signatures, space-separated, as Standard
// Webhooks allows; a receiver accepts the request when one verifies.
func SignAll(secrets []string, msgID string, timestamp int64, body []byte) (string, error) {
	sigs := make([]string, 0, len(secrets))
	for _, sec := range secrets {
		sig, err := Sign(sec, msgID, timestamp, body)
		if err != nil {
			return "", err
		}
		sigs = append(sigs, sig)
	}
	return strings.Join(sigs, " "), nil
}

// webhookBody is the request body (the contract's WebhookPayload): the
// same bytes on every attempt of a delivery.
func webhookBody(typ string, at time.Time, data []byte) ([]byte, error) {
	return json.Marshal(struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{typ, at.UTC().Format(time.RFC3339Nano), data})
}

// eventTime reads the "at" of an event payload.
func eventTime(payload []byte) time.Time {
	var e struct {
		At time.Time `json:"at"`
	}
	_ = json.Unmarshal(payload, &e)
	return e.At
}

// webhookSink POSTs signed payloads.
type webhookSink struct {
	client *http.Client
}

func newWebhookSink() *webhookSink {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 0, // the attempt's context bounds it
	}
	return &webhookSink{client: &http.Client{
		Transport: tr,
		// A receiver that redirects is misconfigured: say so rather than
		// send signed events to wherever it points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// deliver makes one attempt. retryAfter is the receiver's Retry-After,
// when it sent one.
func (w *webhookSink) deliver(ctx context.Context, url string, secrets []string, msgID string, body []byte, timeout time.Duration) (r backstop.AttemptResult, retryAfter time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	defer func() { r.Latency = time.Since(start) }()
	ts := time.Now().Unix()
	sig, err := SignAll(secrets, msgID, ts, body)
	if err != nil {
		return backstop.AttemptResult{Err: err}, 0
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return backstop.AttemptResult{Err: err}, 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Backstop-Webhooks/1")
	req.Header.Set("webhook-id", msgID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := w.client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v", timeout)
		}
		return backstop.AttemptResult{Err: err, Retryable: true}, 0
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, backstop.MaxExcerpt))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	r = backstop.AttemptResult{StatusCode: resp.StatusCode, Excerpt: string(excerpt)}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return r, 0
	}
	r.Err = fmt.Errorf("HTTP %s", resp.Status)
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests:
		r.Retryable = true
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			retryAfter = time.Duration(s) * time.Second
		}
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		r.Err = fmt.Errorf("HTTP %s to %s: redirects are not followed; subscribe the final URL", resp.Status, resp.Header.Get("Location"))
	}
	return r, retryAfter
}
