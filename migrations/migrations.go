// Package migrations embeds Backstop's SQL schema migrations
// (golang-migrate format: NNNNNN_name.up.sql / .down.sql). backstopd applies
// them at start through store.Migrate.
package migrations

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"sort"
)

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

// Hash returns a hex SHA-256 over every migration's name and content, so a
// test template database built from one schema is never reused for another.
func Hash() string {
	names, err := fs.Glob(FS, "*.sql")
	if err != nil {
		panic(err) // the pattern is constant
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := FS.ReadFile(n)
		if err != nil {
			panic(err) // embedded files are always readable
		}
		h.Write([]byte(n))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}
