// The TypeScript SDK of the Backstop API: the types generated from
// openapi/backstop.yaml by openapi-typescript (schema.d.ts, never edited
// by hand) and a typed fetch client from openapi-fetch, plus the one thing
// those do not cover: following the event stream (Server-Sent Events).

import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { components, operations, paths } from "./schema.js";

export type { components, operations, paths };

/** Schemas of the contract, by name: `Schema<"Cluster">`. */
export type Schema<K extends keyof components["schemas"]> = components["schemas"][K];
/** An RFC 9457 problem: the body of every error answer. */
export type Problem = Schema<"Problem">;
/** An event of a cluster's log. */
export type Event = Schema<"Event">;

export interface ClientOptions {
  /** The backstopd base URL, e.g. http://127.0.0.1:8080 (no /v1: paths carry it). */
  baseUrl: string;
  /** An API token (bsk_...), sent as a bearer token. */
  token?: string;
  /** A fetch implementation (default: the global fetch). */
  fetch?: typeof globalThis.fetch;
}

export type BackstopClient = Client<paths>;

/**
 * createBackstopClient returns a typed client of every operation of the
 * contract: `client.GET("/v1/clusters/{cluster_id}", { params: { path: {
 * cluster_id } } })` resolves to `{ data, error, response }`, where `data`
 * is the success body and `error` the Problem of a 4xx/5xx answer.
 */
export function createBackstopClient(opts: ClientOptions): BackstopClient {
  const baseUrl = normalizeBaseUrl(opts.baseUrl);
  const client = createClient<paths>({ baseUrl, fetch: opts.fetch });
  if (opts.token) {
    const auth: Middleware = {
      onRequest({ request }) {
        request.headers.set("Authorization", `Bearer ${opts.token}`);
        return request;
      },
    };
    client.use(auth);
  }
  return client;
}

/**
 * normalizeBaseUrl drops a trailing slash and a trailing /v1: the paths
 * of the contract start with /v1 already, so a base URL copied from an
 * API path would ask for /v1/v1/... and get a 404.
 */
export function normalizeBaseUrl(u: string): string {
  let s = u.replace(/\/+$/, "");
  if (s.endsWith("/v1")) s = s.slice(0, -3);
  return s;
}

/** isProblem tells whether an error value is an RFC 9457 problem. */
export function isProblem(e: unknown): e is Problem {
  return typeof e === "object" && e !== null && "status" in e && "title" in e;
}

export interface SubscribeOptions {
  /** Start after this seq (default: 0, the whole log). */
  after?: number;
  /** Only events of this type (e.g. node.down). */
  type?: string;
  /** Only events of this severity or worse. */
  severity?: Schema<"Severity">;
  /** Stops the subscription. */
  signal?: AbortSignal;
  /** Called for each event, oldest first, never twice. */
  onEvent: (ev: Event) => void | Promise<void>;
  /** Called when a connection fails; the subscription reconnects after it. */
  onError?: (err: unknown) => void;
  /** Wait before reconnecting (default 1000 ms). */
  retryMs?: number;
}

/**
 * subscribeEvents follows a cluster's events live over Server-Sent Events
 * (GET /v1/clusters/{cluster_id}/events/stream) until opts.signal aborts.
 * When the connection drops it reconnects with Last-Event-ID, so no event
 * is missed or delivered twice. A 4xx answer ends it with the Problem
 * thrown; the promise resolves when the signal aborts.
 */
export async function subscribeEvents(opts: ClientOptions, clusterId: string, sub: SubscribeOptions): Promise<void> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  let last = sub.after ?? 0;
  for (;;) {
    if (sub.signal?.aborted) return;
    try {
      const q = new URLSearchParams();
      if (sub.type) q.set("type", sub.type);
      if (sub.severity) q.set("severity", sub.severity);
      const headers: Record<string, string> = { Accept: "text/event-stream" };
      if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
      if (last > 0) headers["Last-Event-ID"] = String(last);
      const url = `${normalizeBaseUrl(opts.baseUrl)}/v1/clusters/${encodeURIComponent(clusterId)}/events/stream?${q}`;
      const resp = await doFetch(url, { headers, signal: sub.signal });
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({ title: resp.statusText, status: resp.status }));
        if (resp.status < 500) throw new ProblemError(body as Problem);
        throw new Error(`event stream: ${resp.status} ${resp.statusText}`);
      }
      if (!resp.body) throw new Error("event stream: no body");
      for await (const msg of parseSSE(resp.body)) {
        if (!msg.data) continue;
        const ev = JSON.parse(msg.data) as Event;
        if (ev.seq <= last) continue;
        await sub.onEvent(ev);
        last = ev.seq;
      }
    } catch (err) {
      if (sub.signal?.aborted) return;
      if (err instanceof ProblemError) throw err;
      sub.onError?.(err);
    }
    await sleep(sub.retryMs ?? 1000, sub.signal);
  }
}

/** ProblemError is a Problem thrown by subscribeEvents. */
export class ProblemError extends Error {
  constructor(readonly problem: Problem) {
    super(`${problem.status} ${problem.title}${problem.detail ? ": " + problem.detail : ""}`);
    this.name = "ProblemError";
  }
}

interface SSEMessage {
  id?: string;
  data: string;
}

/** parseSSE yields the messages of a text/event-stream body. */
async function* parseSSE(body: ReadableStream<Uint8Array>): AsyncGenerator<SSEMessage> {
  const decoder = new TextDecoder();
  let buf = "";
  let id: string | undefined;
  let data: string[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length > 0) yield { id, data: data.join("\n") };
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "data") data.push(value);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}
