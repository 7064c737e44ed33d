package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/storetest"
)

// TestDeadlockedTransactionIsRetried: two transactions that lock the same
// rows in opposite orders deadlock; PostgreSQL aborts one, and withTx runs
// it again instead of answering a client with a 500 (seen under load:
// creating a hierarchy while the failure detector held node rows).
func TestDeadlockedTransactionIsRetried(t *testing.T) {
	st := storetest.New(t)
	ctx := t.Context()
	if _, err := st.Pool().Exec(ctx, `CREATE TABLE deadlock_probe (id int PRIMARY KEY, n int); INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)`); err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	// Both transactions hold their first lock before either asks for its
	// second: a deadlock on the first attempt, whoever runs first.
	var firstLocks sync.WaitGroup
	firstLocks.Add(2)
	var once [2]sync.Once
	run := func(k int, first, second int) error {
		_, err := store.WithTx(ctx, st, func(tx pgx.Tx) (int, error) {
			attempts.Add(1)
			if _, err := tx.Exec(ctx, `UPDATE deadlock_probe SET n = n + 1 WHERE id = $1`, first); err != nil {
				return 0, err
			}
			once[k].Do(firstLocks.Done)
			firstLocks.Wait()
			_, err := tx.Exec(ctx, `UPDATE deadlock_probe SET n = n + 1 WHERE id = $1`, second)
			return 0, err
		})
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- run(0, 1, 2) }()
	go func() { errs <- run(1, 2, 1) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a transaction failed instead of being retried: %v", err)
		}
	}
	if n := attempts.Load(); n < 3 {
		t.Fatalf("%d attempts: no deadlock happened, the test proves nothing", n)
	}
	var sum int
	if err := st.Pool().QueryRow(context.Background(), `SELECT sum(n) FROM deadlock_probe`).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 4 {
		t.Fatalf("sum %d, want 4: each transaction's two updates exactly once", sum)
	}
}

// TestTransactionAbortedEveryTimeIsBusy: a transaction PostgreSQL aborts
// on every attempt (a deadlock or serialization failure that keeps
// coming back) is given up after a bounded number of runs and reported as
// backstop.ErrBusy, which the API answers 503 with Retry-After, never 500.
func TestTransactionAbortedEveryTimeIsBusy(t *testing.T) {
	st := storetest.New(t)
	for _, code := range []string{"40P01", "40001"} {
		var attempts int
		_, err := store.WithTx(t.Context(), st, func(tx pgx.Tx) (int, error) {
			attempts++
			_, err := tx.Exec(t.Context(), `DO $$ BEGIN RAISE EXCEPTION 'lost a lock race' USING ERRCODE = '`+code+`'; END $$`)
			return 0, err
		})
		if !errors.Is(err, backstop.ErrBusy) {
			t.Fatalf("SQLSTATE %s every time: %v, want ErrBusy", code, err)
		}
		if attempts < 2 || attempts > 10 {
			t.Fatalf("SQLSTATE %s: %d attempts, want a few, bounded", code, attempts)
		}
	}
}
