package e2e

import (
	"regexp"
	"sync"
	"testing"
)

// TestTwoReplicasMigrateTogether proves that two backstopd processes
// started at the same moment on one fresh, empty database both become
// ready without logging an error (the schema migration runs once, under
// its lock, and the other replica finds it done), that they share one
// state, and that exactly one bootstrap token was created between them.
func TestTwoReplicasMigrateTogether(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	// Launch both before waiting for either, so their migrations race.
	ds := []*daemon{
		launchDaemon(t, "replica-1", db, adminSecret),
		launchDaemon(t, "replica-2", db, adminSecret),
	}
	var wg sync.WaitGroup
	readyErr := make([]string, len(ds))
	for i, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// waitReady calls t.Fatal, which must run on the test
			// goroutine: poll here, judge below.
			if err := d.pollReady(); err != nil {
				readyErr[i] = err.Error()
			}
		}()
	}
	wg.Wait()
	for i, d := range ds {
		if readyErr[i] != "" {
			t.Fatalf("%s did not become ready: %s", d.name, readyErr[i])
		}
	}

	var versions []int
	for _, d := range ds {
		var h healthJSON
		d.client("").do(t, "GET", "/readyz", nil).must(t, 200).decode(t, &h)
		if h.SchemaVersion == nil {
			t.Fatalf("%s: /readyz without schema_version", d.name)
		}
		versions = append(versions, *h.SchemaVersion)
	}
	if versions[0] != versions[1] {
		t.Errorf("replicas report schema versions %v, want one version", versions)
	}

	tokens := listAll[tokenJSON](t, ds[0].client(adminSecret), "/v1/tokens")
	if len(tokens) != 1 || tokens[0].Name != "bootstrap" || tokens[0].Role != "admin" {
		t.Errorf("tokens after two concurrent first starts: %+v, want exactly one admin token named bootstrap", tokens)
	}

	// One state: what one replica writes, the other reads.
	var c clusterJSON
	ds[0].client(adminSecret).do(t, "POST", "/v1/clusters", `{"name": "shared"}`).must(t, 201).decode(t, &c)
	var got clusterJSON
	ds[1].client(adminSecret).do(t, "GET", "/v1/clusters/"+c.ID, nil).must(t, 200).decode(t, &got)
	sameJSON(t, "cluster read through the other replica", got, c)

	for _, d := range ds {
		d.logHasNoErrors(t)
	}
}

// tokenRE matches an API token secret as printed on the first start.
var tokenRE = regexp.MustCompile(`\bbsk_[A-Za-z0-9_-]{20,}`)

// TestFirstStartPrintsToken proves that backstopd started without
// BACKSTOP_BOOTSTRAP_TOKEN on a fresh database prints a one-time admin
// token on its standard error, that the token works, and that a later
// start on the same database prints none (and the first token still
// works).
func TestFirstStartPrintsToken(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)

	first := startDaemon(t, "first-start", db, "")
	printed := tokenRE.FindAllString(first.stderr(), -1)
	if len(printed) != 1 {
		t.Fatalf("first start printed %d tokens %q, want exactly one", len(printed), printed)
	}
	secret := printed[0]
	first.client(secret).do(t, "GET", "/v1/clusters", nil).want(t, 200)
	tokens := listAll[tokenJSON](t, first.client(secret), "/v1/tokens")
	if len(tokens) != 1 || tokens[0].Role != "admin" {
		t.Errorf("tokens after the first start: %+v, want one admin token", tokens)
	}
	first.client("bsk_not-the-printed-token-0000000000").do(t, "GET", "/v1/clusters", nil).want(t, 401)
	first.stop()

	second := startDaemon(t, "second-start", db, "")
	if m := tokenRE.FindAllString(second.stderr(), -1); len(m) != 0 {
		t.Errorf("second start printed tokens %q, want none", m)
	}
	second.client(secret).do(t, "GET", "/v1/clusters", nil).want(t, 200)
	if n := len(listAll[tokenJSON](t, second.client(secret), "/v1/tokens")); n != 1 {
		t.Errorf("%d tokens after the second start, want 1", n)
	}
}
