// api.js: the console's only way to the server. Every call carries the
// token from sessionStorage as a bearer header (never in a URL); every
// failure becomes an ApiError holding the RFC 9457 problem the server sent,
// so no view can fail silently.

const TOKEN_KEY = "backstop.token";

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(t) { sessionStorage.setItem(TOKEN_KEY, t); }
export function clearToken() { sessionStorage.removeItem(TOKEN_KEY); }

// ApiError is a failed request: status, the problem body and the request id.
export class ApiError extends Error {
	constructor(status, problem, requestID, what) {
		const p = problem || {};
		super(`${p.title || "HTTP " + status}: ${p.detail || "no detail"}`);
		this.status = status;
		this.problem = p;
		this.requestID = requestID || "";
		this.what = what || "";
	}
	// text is one readable line for an operator.
	get text() {
		const p = this.problem;
		let s = (this.what ? this.what + " failed: " : "") + (p.detail || p.title || `HTTP ${this.status}`);
		if (Array.isArray(p.errors) && p.errors.length > 1) {
			s += " (" + p.errors.map((e) => `${e.location}: ${e.message}`).join("; ") + ")";
		}
		return s;
	}
}

// onUnauthorized is called when the server rejects the token (set by app.js).
export let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

async function problemOf(res) {
	const text = await res.text().catch(() => "");
	try {
		const p = JSON.parse(text);
		if (p && typeof p === "object") return p;
	} catch { /* not JSON: keep the text */ }
	return { title: res.statusText || `HTTP ${res.status}`, status: res.status, detail: text.slice(0, 500) || "the server sent no detail" };
}

// request sends one API call. opts: {body, idempotencyKey, ifMatch, what, tokenOverride}.
export async function request(method, path, opts = {}) {
	const headers = { Accept: "application/json" };
	const tok = opts.tokenOverride ?? token();
	if (tok) headers.Authorization = "Bearer " + tok;
	let body;
	if (opts.body !== undefined) {
		headers["Content-Type"] = "application/json";
		body = JSON.stringify(opts.body);
	}
	if (opts.idempotencyKey) headers["Idempotency-Key"] = opts.idempotencyKey;
	let res;
	try {
		res = await fetch(path, { method, headers, body, cache: "no-store" });
	} catch (e) {
		throw new ApiError(0, { title: "Network error", detail: `cannot reach backstopd (${e.message}); is it running?` }, "", opts.what);
	}
	if (!res.ok) {
		const err = new ApiError(res.status, await problemOf(res), res.headers.get("X-Request-Id"), opts.what);
		if (res.status === 401 && !opts.tokenOverride) onUnauthorized(err);
		throw err;
	}
	if (res.status === 204) return null;
	return res.json();
}

export const get = (path, what) => request("GET", path, { what });

// all follows next_cursor through every page of a list.
export async function all(path, what, max = 50) {
	const items = [];
	let cursor = "";
	for (let i = 0; i < max; i++) {
		const sep = path.includes("?") ? "&" : "?";
		const page = await get(path + sep + "limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""), what);
		items.push(...page.items);
		if (!page.next_cursor) break;
		cursor = page.next_cursor;
	}
	return items;
}

export function newKey() {
	if (crypto.randomUUID) return crypto.randomUUID();
	return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// follow reads the cluster's event stream (Server-Sent Events over fetch,
// so the token goes in a header), resuming after the last seq it saw on
// every reconnect. onEvent(ev) gets each event; onStatus(state, detail)
// gets "connecting", "live" or "down". A stream silent for longer than
// three heartbeats is taken as dead and reopened. Returns a stop function.
export function follow(clusterID, after, onEvent, onStatus) {
	let stopped = false;
	let ctrl = null;
	let last = after;
	const run = async () => {
		let backoff = 500;
		while (!stopped) {
			ctrl = new AbortController();
			let watchdog = null;
			const kick = () => {
				clearTimeout(watchdog);
				watchdog = setTimeout(() => ctrl.abort(new Error("no data or heartbeat for 45 s")), 45000);
			};
			try {
				onStatus("connecting", "");
				kick();
				const res = await fetch(`/v1/clusters/${clusterID}/events/stream?after=${last}`, {
					headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
					signal: ctrl.signal, cache: "no-store",
				});
				if (!res.ok) {
					const err = new ApiError(res.status, await problemOf(res), res.headers.get("X-Request-Id"), "Live event stream");
					if (res.status === 401) { onUnauthorized(err); return; }
					throw err;
				}
				onStatus("live", "");
				backoff = 500;
				const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
				let buf = "";
				for (;;) {
					const { value, done } = await reader.read();
					if (done) throw new Error("the server closed the stream");
					kick();
					buf += value.replace(/\r\n?/g, "\n");
					let i;
					while ((i = buf.indexOf("\n\n")) >= 0) {
						const block = buf.slice(0, i);
						buf = buf.slice(i + 2);
						let id = null;
						const data = [];
						for (const line of block.split("\n")) {
							if (line.startsWith(":")) continue;
							const c = line.indexOf(":");
							const field = c < 0 ? line : line.slice(0, c);
							const v = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
							if (field === "id") id = v;
							else if (field === "data") data.push(v);
						}
						if (data.length === 0) continue;
						let ev;
						try { ev = JSON.parse(data.join("\n")); } catch { continue; }
						if (id !== null && /^\d+$/.test(id)) last = Number(id);
						onEvent(ev);
					}
				}
			} catch (e) {
				if (stopped) return;
				onStatus("down", e instanceof ApiError ? e.text : (e && e.message) || String(e));
				await new Promise((r) => setTimeout(r, backoff));
				backoff = Math.min(backoff * 2, 5000);
			} finally {
				clearTimeout(watchdog);
			}
		}
	};
	run();
	const stop = () => { stopped = true; if (ctrl) ctrl.abort(); };
	// stop.reconnect drops the connection and opens a new one: for when
	// another request found the server unreachable, which an open stream
	// may not notice for a long time.
	stop.reconnect = () => { if (ctrl) ctrl.abort(new Error("backstopd is unreachable")); };
	return stop;
}
