package nslab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Client speaks JSON to the Backstop API with a bearer token.
type Client struct {
	Base  string
	Token string
	HTTP  *http.Client
}

// NewClient returns a client of base with token.
func NewClient(base, token string) *Client {
	return &Client{Base: base, Token: token, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

// Response is an answer: status, Location header and body.
type Response struct {
	Status   int
	Location string
	Body     []byte
}

// Do sends body (JSON, nil for none) and returns the answer; it fails
// unless the status is want (0: any). out, when not nil, receives the
// decoded body.
func (c *Client) Do(ctx context.Context, method, path string, body any, want int, out any) (*Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := &Response{Status: resp.StatusCode, Location: resp.Header.Get("Location"), Body: b}
	if want != 0 && resp.StatusCode != want {
		return r, fmt.Errorf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return r, fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return r, nil
}
