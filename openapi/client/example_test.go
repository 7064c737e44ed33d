package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/migrations"
	"github.com/backstop-ha/backstop/openapi/client"
	"github.com/backstop-ha/backstop/server"
	"github.com/backstop-ha/backstop/server/signing"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/storetest"
)

// The examples run against a real backstopd (the server package on a
// throwaway PostgreSQL database), started here because an Example
// function has no *testing.T.

const exampleToken = "bsk_example-admin-0123456789abcdef"

var exampleURL string

func TestMain(m *testing.M) { os.Exit(runWithServer(m)) }

func runWithServer(m *testing.M) int {
	defer storetest.CloseSharedHarness()
	ctx := context.Background()
	h, err := storetest.SharedHarness(ctx)
	if err != nil {
		if os.Getenv("CI") == "" {
			fmt.Fprintln(os.Stderr, "skipping the examples: no PostgreSQL:", err)
			return 0
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dbURL, drop, err := h.CreateDatabase(ctx, "backstop_"+migrations.Hash()[:16], func(ctx context.Context, url string) error {
		st, err := store.Open(ctx, url)
		if err != nil {
			return err
		}
		defer st.Close()
		_, err = store.Migrate(ctx, st.Pool())
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer drop(context.Background())
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	if _, err := st.EnsureBootstrapToken(ctx, exampleToken); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keys, err := signing.Open(ctx, st, make([]byte, 32))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	latest, err := store.LatestMigration()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv, err := server.New(server.Config{Store: st, Keyring: keys, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SchemaVersion: latest})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	exampleURL = ts.URL
	return m.Run()
}

// Create a cluster, read it back, and tell a problem from a success. The
// client takes the server's base URL (the paths carry /v1); a request
// editor adds the API token. Each XxxWithResponse method returns the
// answer with its body decoded by status: JSON201 for a 201, JSON200 for
// a 200, ApplicationproblemJSON404 (an RFC 9457 problem) for a 404 and so
// on for each error status the operation declares, and
// ApplicationproblemJSONDefault for any other (5xx). client.ProblemOf
// reads the problem of any error answer alike.
func Example() {
	ctx := context.Background()
	c, err := client.NewClientWithResponses(exampleURL, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+exampleToken)
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}

	// A create carries an idempotency key: sent again after a timeout,
	// the same key gets the first answer instead of a second cluster.
	key := "create-mail-1"
	profile := client.Lan
	created, err := c.CreateClusterWithResponse(ctx, &client.CreateClusterParams{IdempotencyKey: &key},
		client.ClusterCreate{Name: "mail", TimingProfile: &profile})
	if err != nil {
		fmt.Println(err) // no answer: retry with the same key
		return
	}
	if created.JSON201 == nil {
		if p := client.ProblemOf(created.ContentType(), created.Body); p != nil {
			fmt.Println(created.StatusCode(), p.Title)
		}
		return
	}
	fmt.Println(created.StatusCode(), created.JSON201.Name, created.JSON201.TimingProfile, created.JSON201.Timing.HeartbeatMs)

	got, err := c.GetClusterWithResponse(ctx, created.JSON201.Id)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(got.JSON200.Name, "ETag", got.HTTPResponse.Header.Get("ETag"))

	missing, err := c.GetClusterWithResponse(ctx, uuid.New())
	if err != nil {
		fmt.Println(err)
		return
	}
	if p := missing.ApplicationproblemJSON404; p != nil {
		fmt.Println(missing.StatusCode(), p.Title)
	}
	// Output:
	// 201 mail lan 250
	// mail ETag "1"
	// 404 Not Found
}
