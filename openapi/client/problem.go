package client

import (
	"encoding/json"
	"mime"
)

// ProblemOf decodes the RFC 9457 problem of an answer from its Content-Type
// and body, or returns nil when the answer is no problem. Each operation
// types the problems it declares in its own field (ApplicationproblemJSON404,
// ...) and every other one in ApplicationproblemJSONDefault; a caller that
// handles any error answer the same way reads it here instead, so it need
// not follow which statuses each operation declares.
func ProblemOf(contentType string, body []byte) *Problem {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/problem+json" {
		return nil
	}
	var p Problem
	if err := json.Unmarshal(body, &p); err != nil || (p.Title == "" && p.Status == 0) {
		return nil
	}
	return &p
}
