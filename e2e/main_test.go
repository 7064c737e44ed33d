package e2e

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/backstop-ha/backstop/pki"
	"github.com/backstop-ha/backstop/store/pgtemp"
	"github.com/backstop-ha/backstop/store/storetest"
)

// specPath is the API contract every response is checked against, relative
// to this package's directory (where `go test` runs the binary).
const specPath = "../openapi/backstop.yaml"

// env is what TestMain prepares once for every test.
var env struct {
	bin     string             // the backstopd binary built from ../cmd/backstopd
	agent   string             // the backstop-agent binary
	tcpecho string             // the protected service of the agent tests
	ctl     string             // backstopctl
	pg      *storetest.Harness // hands out fresh databases; nil when skip is set
	skip    string             // why every test skips (no PostgreSQL available)
	spec    []byte             // the contract, as in the repository
	router  routers.Router     // finds the contract's operation for a request
	options *openapi3filter.Options
	// ca is the throwaway CA that issues every backstopd's certificate:
	// the tests run TLS-first, agents pinned to it, clients trusting
	// caPool (the CA in caFile, for backstopctl).
	ca     *pki.CA
	caPool *x509.CertPool
	caFile string
}

// TestMain builds backstopd once, loads the contract and starts one
// throwaway PostgreSQL server for the whole package; every test then gets
// its own empty database and its own backstopd processes.
func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	removeStaleDirs()
	tmp, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", tmpPrefix, os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	removeOnSignal(tmp)

	if err := buildBackstopd(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if env.ca, err = pki.NewCA("e2e CA", 24*time.Hour); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	env.caPool = x509.NewCertPool()
	env.caPool.AddCert(env.ca.Cert)
	env.caFile = filepath.Join(tmp, "ca.pem")
	if err := os.WriteFile(env.caFile, env.ca.PEM(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if err := loadContract(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	h, err := storetest.NewHarness(ctx, pgtemp.Options{})
	cancel()
	switch {
	case errors.Is(err, pgtemp.ErrBinariesNotFound) && os.Getenv("CI") == "":
		env.skip = err.Error()
	case err != nil:
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	default:
		env.pg = h
		defer func() {
			if err := h.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: stop PostgreSQL:", err)
			}
		}()
	}
	return m.Run()
}

// tmpPrefix starts the name of the temporary directory holding the
// binary, followed by the test process's PID.
const tmpPrefix = "backstop-e2e-"

// removeOnSignal removes dir and exits when the test process is
// interrupted, terminated or hung up on (not SIGPIPE: subscribing to it
// would turn an EPIPE on any socket of a test into an exit): the
// deferred cleanups would not run. backstopd children die with the process
// (see childAttr) and pgtemp's watchdog stops PostgreSQL.
func removeOnSignal(dir string) {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigc
		os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "e2e: %v: stopped\n", sig)
		os.Exit(2)
	}()
}

// removeStaleDirs removes the temporary directories of earlier runs whose
// process is gone without cleaning up (killed, or a test timeout panic).
func removeStaleDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), tmpPrefix+"*"))
	for _, dir := range matches {
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(dir), tmpPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

// buildBackstopd builds ./cmd/backstopd, ./cmd/backstop-agent and the
// test service into dir, as normal (non-race) binaries: the system under
// test is the shipped program.
func buildBackstopd(dir string) error {
	env.bin = filepath.Join(dir, "backstopd")
	env.agent = filepath.Join(dir, "backstop-agent")
	env.tcpecho = filepath.Join(dir, "tcpecho")
	env.ctl = filepath.Join(dir, "backstopctl")
	builds := map[string]string{env.bin: "./cmd/backstopd", env.agent: "./cmd/backstop-agent", env.tcpecho: "./e2e/internal/tcpecho",
		env.ctl: "./cmd/backstopctl"}
	// BACKSTOP_E2E_BACKSTOPD runs the tests against another backstopd
	// build (e.g. a release candidate) with this tree's tests.
	if b := os.Getenv("BACKSTOP_E2E_BACKSTOPD"); b != "" {
		delete(builds, env.bin)
		env.bin = b
	}
	for out, pkg := range builds {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = ".." // the module root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
	}
	// The agents run as root in namespaces and must reach the binaries.
	return os.Chmod(dir, 0o755)
}

// loadContract loads and validates openapi/backstop.yaml and prepares the
// router and options the validating transport uses.
func loadContract() error {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		return fmt.Errorf("load %s: %w", specPath, err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return fmt.Errorf("%s is not a valid OpenAPI document: %w", specPath, err)
	}
	doc.Servers = nil // match paths whatever host and port backstopd listens on
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return fmt.Errorf("router for %s: %w", specPath, err)
	}
	env.spec, env.router = raw, router
	env.options = &openapi3filter.Options{
		MultiError:            true,
		IncludeResponseStatus: true,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)),
		},
	}
	// The contract declares GET /openapi.yaml as application/yaml with
	// schema {type: string}: in OpenAPI 3.0 that describes the raw payload.
	// kin-openapi's default YAML decoder parses the document into an
	// object instead, which can never be a string; check the body as the
	// text it is (TestConfigurationRoundTrip parses it separately).
	openapi3filter.RegisterBodyDecoder("application/yaml", openapi3filter.PlainBodyDecoder)
	return nil
}
