package backstop

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// KindFiles is the kind of a files resource: configuration files that
// follow the hierarchy. On the node in service the agent watches the
// declared paths and uploads every change as a new version; bringing the
// hierarchy in service elsewhere installs the newest version before the
// resources that depend on it start.
const KindFiles = "files"

// Limits of a files resource.
const (
	// DefaultConfigMaxBytes and MaxConfigMaxBytes bound the total size of
	// one version (param max_bytes): a version travels in one request
	// body (1 MiB, base64 included) and is kept in PostgreSQL.
	DefaultConfigMaxBytes = 256 << 10
	MaxConfigMaxBytes     = 512 << 10
	// MaxConfigFiles bounds the files of one version.
	MaxConfigFiles = 512
	// MaxConfigPaths bounds the declared paths (param paths).
	MaxConfigPaths = 64
	// DefaultConfigKeep and MaxConfigKeep bound the versions kept per
	// resource (param keep_versions); older ones are pruned in the
	// transaction that adds a version.
	DefaultConfigKeep = 10
	MaxConfigKeep     = 100
)

// Values of a files resource's on_unreachable parameter: what a bring-up
// does when the control plane cannot give the newest version.
const (
	// ConfigProceed starts with the files already on the node and says so
	// (the default: the command that asked for the bring-up came from the
	// control plane a moment ago, so this is a control plane that failed
	// since, and the service matters more than its latest change).
	ConfigProceed = "proceed"
	// ConfigFail fails the step, so that the hierarchy never runs with
	// files older than the newest version.
	ConfigFail = "fail"
)

// ConfigFile is one regular file of a configuration version. Content is
// nil where it is not shown (a secret version, a listing).
type ConfigFile struct {
	Path    string
	Mode    uint32 // permission bits (0o7777)
	Size    int64
	SHA256  string // hex
	Content []byte
	// MTime is the modification time where it was captured (zero:
	// unknown); an install restores it. Not part of any checksum.
	MTime time.Time
}

// ConfigVersion is one captured state of a files resource.
type ConfigVersion struct {
	ClusterID   string
	HierarchyID string
	Resource    string
	Version     int64
	// SHA256 is the digest of the whole version (ConfigDigest).
	SHA256 string
	Size   int64
	// Secret versions are sealed in the database and never shown.
	Secret     bool
	NodeID     string
	CapturedAt time.Time
	Files      []ConfigFile
	// Stored is the content as the database keeps it: JSON {path:
	// content}, sealed when Secret. OpenConfigContent fills Files'
	// Content from it.
	Stored []byte
	// Previous is the version before it, in lists (nil for the oldest
	// kept).
	Previous *ConfigVersion
}

// ConfigContent is the stored form of files' contents (before sealing).
func ConfigContent(files []ConfigFile) []byte {
	m := make(map[string][]byte, len(files))
	for _, f := range files {
		m[f.Path] = f.Content
		if m[f.Path] == nil {
			m[f.Path] = []byte{}
		}
	}
	b, _ := json.Marshal(m) // strings and bytes: cannot fail
	return b
}

// OpenConfigContent fills the Content of v's files from plain (Stored,
// unsealed) and checks each against its checksum.
func OpenConfigContent(v *ConfigVersion, plain []byte) error {
	var m map[string][]byte
	if err := json.Unmarshal(plain, &m); err != nil {
		return fmt.Errorf("config version %d: stored content: %w", v.Version, err)
	}
	for i := range v.Files {
		f := &v.Files[i]
		c, ok := m[f.Path]
		if !ok {
			return fmt.Errorf("config version %d: stored content lacks %s", v.Version, f.Path)
		}
		if FileSHA256(c) != f.SHA256 {
			return fmt.Errorf("config version %d: stored content of %s does not match its checksum", v.Version, f.Path)
		}
		f.Content = c
	}
	return nil
}

// ConfigDigest is the SHA-256 of a version: over its files sorted by path,
// each as "path\x00mode(octal)\x00sha256\n". It covers names, modes and
// contents, so that an agent can tell a changed file from an unchanged one
// and a download from what was uploaded.
func ConfigDigest(files []ConfigFile) string {
	fs := slices.Clone(files)
	slices.SortFunc(fs, func(a, b ConfigFile) int { return strings.Compare(a.Path, b.Path) })
	h := sha256.New()
	for _, f := range fs {
		fmt.Fprintf(h, "%s\x00%o\x00%s\n", f.Path, f.Mode&0o7777, f.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// FileSHA256 is the hex SHA-256 of b.
func FileSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// VerifyConfig checks a version's files: each content hashes to its
// SHA256 and has its Size, paths are unique, clean and (unless declared
// is nil) below one of the declared paths, and the digest is sha (when
// sha is not empty). It
// returns the first problem found, to refuse an upload or an install with.
func VerifyConfig(files []ConfigFile, declared []string, sha string) error {
	seen := map[string]bool{}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return fmt.Errorf("file %q: not an absolute, clean path", f.Path)
		}
		if seen[f.Path] {
			return fmt.Errorf("file %q: listed twice", f.Path)
		}
		seen[f.Path] = true
		if declared != nil && !ConfigPathCovered(f.Path, declared) {
			return fmt.Errorf("file %q: not below any declared path (%s)", f.Path, strings.Join(declared, ", "))
		}
		if f.Mode&^0o7777 != 0 {
			return fmt.Errorf("file %q: mode %o has more than permission bits", f.Path, f.Mode)
		}
		if int64(len(f.Content)) != f.Size {
			return fmt.Errorf("file %q: %d bytes, but its size says %d", f.Path, len(f.Content), f.Size)
		}
		if got := FileSHA256(f.Content); got != f.SHA256 {
			return fmt.Errorf("file %q: checksum mismatch: content hashes to sha256 %s, expected %s", f.Path, got, f.SHA256)
		}
	}
	if sha != "" {
		if got := ConfigDigest(files); got != sha {
			return fmt.Errorf("version checksum mismatch: files hash to sha256 %s, expected %s", got, sha)
		}
	}
	return nil
}

// ConfigPathCovered reports whether p is one of the declared paths or
// below one.
func ConfigPathCovered(p string, declared []string) bool {
	for _, d := range declared {
		if p == d || strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// IsText reports whether b is shown as text in a diff: valid UTF-8 with
// no NUL byte.
func IsText(b []byte) bool {
	return utf8.Valid(b) && !slices.Contains(b, 0)
}

// FilesParams are the parameters of a files resource, with defaults.
type FilesParams struct {
	Paths         []string
	MaxBytes      int64
	Secret        bool
	KeepVersions  int
	OnUnreachable string
}

// ParseFilesParams reads the parameters of a valid files resource (one
// Normalize accepted), filling defaults.
func ParseFilesParams(p map[string]any) FilesParams {
	out := FilesParams{MaxBytes: DefaultConfigMaxBytes, KeepVersions: DefaultConfigKeep, OnUnreachable: ConfigProceed}
	if l, ok := p["paths"].([]any); ok {
		for _, e := range l {
			if s, ok := e.(string); ok {
				out.Paths = append(out.Paths, s)
			}
		}
	}
	if l, ok := p["paths"].([]string); ok {
		out.Paths = append(out.Paths, l...)
	}
	if n, ok := intParam(p["max_bytes"]); ok {
		out.MaxBytes = int64(n)
	}
	if n, ok := intParam(p["keep_versions"]); ok {
		out.KeepVersions = n
	}
	if b, ok := p["secret"].(bool); ok {
		out.Secret = b
	}
	if s, ok := p["on_unreachable"].(string); ok && s != "" {
		out.OnUnreachable = s
	}
	return out
}

func intParam(v any) (int, bool) {
	switch n := v.(type) {
	case float64:
		return int(n), true
	case int:
		return n, true
	case int64:
		return int(n), true
	}
	return 0, false
}

func checkConfigPaths(v any) string {
	l, ok := v.([]any)
	if !ok {
		if s, isStrings := v.([]string); isStrings {
			l = make([]any, len(s))
			for i, e := range s {
				l[i] = e
			}
		} else {
			return "must be a list of absolute paths"
		}
	}
	if len(l) == 0 || len(l) > MaxConfigPaths {
		return fmt.Sprintf("must list 1 to %d absolute paths", MaxConfigPaths)
	}
	seen := map[string]bool{}
	for i, e := range l {
		s, ok := e.(string)
		if !ok || s == "" {
			return fmt.Sprintf("entry %d must be an absolute path", i)
		}
		if !path.IsAbs(s) {
			return fmt.Sprintf("entry %d (%q) must be an absolute path", i, s)
		}
		if slices.Contains(strings.Split(s, "/"), "..") {
			return fmt.Sprintf("entry %d (%q) must not contain ..", i, s)
		}
		if path.Clean(s) != s {
			return fmt.Sprintf("entry %d (%q) must be a clean path (%q)", i, s, path.Clean(s))
		}
		if s == "/" {
			return fmt.Sprintf("entry %d: / is not a configuration path", i)
		}
		if seen[s] {
			return fmt.Sprintf("entry %d (%q) is listed twice", i, s)
		}
		seen[s] = true
	}
	for _, a := range l {
		for _, b := range l {
			if a != b && strings.HasPrefix(a.(string), b.(string)+"/") {
				return fmt.Sprintf("%q is inside %q, which is listed already", a, b)
			}
		}
	}
	return ""
}

func checkBool(v any) string {
	if _, ok := v.(bool); !ok {
		return "must be true or false"
	}
	return ""
}

func checkOnUnreachable(v any) string {
	if s, ok := v.(string); !ok || (s != ConfigProceed && s != ConfigFail) {
		return fmt.Sprintf("must be %q (start with the files on the node) or %q (fail the bring-up)", ConfigProceed, ConfigFail)
	}
	return ""
}

// ConfigSealID is what a secret version's content is sealed for: a
// sealed content copied to another version does not open.
func ConfigSealID(hierarchyID, resource string, version int64) string {
	return fmt.Sprintf("config/%s/%s/%d", hierarchyID, resource, version)
}

// FilesResource returns the files resource name of h (ErrNotFound when h
// has no files resource of that name).
func FilesResource(h Hierarchy, name string) (Resource, error) {
	for _, r := range h.Resources {
		if r.Name == name {
			if r.Kind != KindFiles {
				return r, fmt.Errorf("%w: resource %q of hierarchy %q is of kind %s, not %s", ErrNotFound, name, h.Name, r.Kind, KindFiles)
			}
			return r, nil
		}
	}
	return Resource{}, fmt.Errorf("%w: hierarchy %q has no resource %q", ErrNotFound, h.Name, name)
}

// CheckConfigUpload checks an upload of files for the files resource r:
// VerifyConfig, the resource's max_bytes, and, unless r is secret, that
// every file is readable by others (a file only its owner or group may
// read looks like a secret: it must go in a resource with secret: true).
// Problems are a *ValidationError naming /files/N or /sha256.
func CheckConfigUpload(r Resource, files []ConfigFile, sha string) error {
	p := ParseFilesParams(r.Params)
	v := &ValidationError{}
	var total int64
	for i, f := range files {
		total += int64(len(f.Content))
		if err := VerifyConfig([]ConfigFile{f}, p.Paths, ""); err != nil {
			v.Add(fmt.Sprintf("/files/%d", i), "%s", err)
			continue
		}
		if !p.Secret && f.Mode&0o004 == 0 {
			v.Add(fmt.Sprintf("/files/%d/mode", i), "%s has mode %04o: others cannot read it, so it looks like a secret; put it in a files resource with secret: true", f.Path, f.Mode)
		}
	}
	if len(files) > MaxConfigFiles {
		v.Add("/files", "%d files: at most %d per version", len(files), MaxConfigFiles)
	}
	if total > p.MaxBytes {
		v.Add("/files", "%d bytes: more than the resource's max_bytes (%d)", total, p.MaxBytes)
	}
	if len(v.Fields) == 0 {
		if err := VerifyConfig(files, p.Paths, sha); err != nil {
			v.Add("/sha256", "%s", err)
		}
	}
	return v.Err()
}
