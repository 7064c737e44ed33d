// The SDK against a live backstopd: run by the Go test
// openapi/sdk/ts_test.go, which starts a control plane on PostgreSQL with
// three agents and passes it in the environment.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { createBackstopClient, isProblem, subscribeEvents, type Event } from "../src/index.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (this test is run by openapi/sdk/ts_test.go)`);
  return v;
}

const baseUrl = env("BACKSTOP_URL");
const token = env("BACKSTOP_TOKEN");
const client = createBackstopClient({ baseUrl: baseUrl + "/v1", token }); // a /v1 suffix is tolerated

test("create and read a cluster", async () => {
  const key = randomUUID();
  const created = await client.POST("/v1/clusters", {
    params: { header: { "Idempotency-Key": key } },
    body: { name: "ts-sdk", timing_profile: "wan" },
  });
  assert.equal(created.response.status, 201, JSON.stringify(created.error));
  assert.ok(created.data);
  assert.equal(created.data.name, "ts-sdk");
  assert.equal(created.data.timing_profile, "wan");

  const read = await client.GET("/v1/clusters/{cluster_id}", { params: { path: { cluster_id: created.data.id } } });
  assert.equal(read.response.status, 200);
  assert.equal(read.data?.id, created.data.id);
  assert.equal(read.data?.timing.heartbeat_ms, created.data.timing.heartbeat_ms);
  assert.ok(read.response.headers.get("ETag"));

  // The same key and body: the first answer again, not a second cluster.
  const again = await client.POST("/v1/clusters", {
    params: { header: { "Idempotency-Key": key } },
    body: { name: "ts-sdk", timing_profile: "wan" },
  });
  assert.equal(again.data?.id, created.data.id);
  assert.equal(again.response.headers.get("Idempotent-Replayed"), "true");
});

test("a 4xx is a typed Problem", async () => {
  const missing = await client.GET("/v1/clusters/{cluster_id}", { params: { path: { cluster_id: randomUUID() } } });
  assert.equal(missing.data, undefined);
  assert.ok(missing.error);
  assert.equal(missing.error.status, 404);
  assert.equal(missing.error.title, "Not Found");
  assert.match(missing.error.detail ?? "", /not found/);
  assert.ok(isProblem(missing.error));
  assert.equal(missing.response.headers.get("Content-Type"), "application/problem+json");

  const invalid = await client.POST("/v1/clusters", { body: { name: "not a name!" } });
  assert.equal(invalid.response.status, 400); // the request fails the contract's schema
  const locations = (invalid.error?.errors ?? []).map((e) => e.location);
  assert.ok(locations.includes("/name"), `errors: ${JSON.stringify(invalid.error)}`);

  const unauthorized = await createBackstopClient({ baseUrl, token: "bsk_wrong" }).GET("/v1/clusters", {});
  assert.equal(unauthorized.error?.status, 401);
});

test("an SSE subscription sees an event as it is written", async () => {
  const clusterId = env("BACKSTOP_CLUSTER_ID");
  const hierarchyId = env("BACKSTOP_HIERARCHY_ID");
  const nodeId = env("BACKSTOP_NODE_ID");

  const log = await client.GET("/v1/clusters/{cluster_id}/events", { params: { path: { cluster_id: clusterId }, query: { limit: 1000 } } });
  assert.ok(log.data);
  const after = log.data.last_seq;

  const ac = new AbortController();
  const seen: Event[] = [];
  let resolveSeen!: () => void;
  const got = new Promise<void>((r) => (resolveSeen = r));
  const sub = subscribeEvents({ baseUrl, token }, clusterId, {
    after,
    signal: ac.signal,
    onEvent: (ev) => {
      seen.push(ev);
      if (ev.type === "hierarchy.in_service") resolveSeen();
    },
  });

  const op = await client.POST("/v1/clusters/{cluster_id}/hierarchies/{hierarchy_id}/in-service", {
    params: { path: { cluster_id: clusterId, hierarchy_id: hierarchyId } },
    body: { node_id: nodeId },
  });
  assert.equal(op.response.status, 202, JSON.stringify(op.error));
  assert.equal(op.data?.kind, "in_service");

  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no hierarchy.in_service event in 60 s; saw ${JSON.stringify(seen.map((e) => e.type))}`)), 60_000);
  });
  try {
    await Promise.race([got, timeout]);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  await sub;

  const seqs = seen.map((e) => e.seq);
  assert.ok(seqs.every((s, i) => s > after && (i === 0 || s > seqs[i - 1]!)), `seqs ${seqs}`);
  const ev = seen.find((e) => e.type === "hierarchy.in_service")!;
  assert.equal(ev.cluster_id, clusterId);
  assert.equal(ev.subject["hierarchy_id"], hierarchyId);
});
