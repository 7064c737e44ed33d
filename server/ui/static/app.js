// app.js: sign-in, the shell, routing, the cluster's live state and the
// overview. Other views live in views.js, actions in actions.js.
import * as api from "./api.js";
import { h, replace, badge, fmtTime, ago, fmtMs } from "./util.js";
import { hierarchyView, incidentsView, eventsView, whatIfView } from "./views.js";
import { switchoverDialog, serviceDialog, maintenanceDialog } from "./actions.js";

const ROLES = { viewer: 1, operator: 2, admin: 3 };

// S is the console's state; views read it and re-render on change.
export const S = {
	me: null, // {name, role}
	clusters: [],
	cid: "",
	nodes: [],
	hiers: [],
	paths: [],
	cp: null,
	incidents: [],
	events: [], // newest last, at most MAX_EVENTS
	fenced: {}, // node id -> event that says it was fenced, until it is up again
	stream: { state: "connecting", detail: "", since: Date.now() },
	lastRefresh: 0,
	refreshError: null,
	gen: 0, // bumped after every action, so views reload what they cache
};
const MAX_EVENTS = 2000;

export const can = (role) => S.me && ROLES[S.me.role] >= ROLES[role];
export const nodeName = (id) => (S.nodes.find((n) => n.id === id) || {}).name || (id ? id.slice(0, 8) : "—");
export const hierName = (id) => (S.hiers.find((x) => x.id === id) || {}).name || (id ? id.slice(0, 8) : "—");
export const cpath = (p) => `/v1/clusters/${S.cid}${p}`;

// nodeState is what the overview shows: the API's state, refined with
// maintenance and fencing.
export function nodeState(n) {
	if (n.state === "down" && S.fenced[n.id]) return "fenced";
	if (n.maintenance && n.state === "up") return "maintenance";
	return n.state;
}

// ---------- errors: shown, never swallowed ----------

export function showError(err) {
	const box = document.getElementById("errors");
	const text = err instanceof api.ApiError ? err.text : String((err && err.message) || err);
	const rid = err instanceof api.ApiError && err.requestID ? ` (request ${err.requestID})` : "";
	const item = h("div", { class: "error", role: "alert" },
		h("strong", {}, "Error: "), text + rid, " ",
		h("button", { class: "link", type: "button", onclick: () => item.remove() }, "Dismiss"));
	box.append(item);
	while (box.children.length > 4) box.firstChild.remove();
}

// ---------- sign-in ----------

function loginView(message) {
	stopCluster();
	document.getElementById("who").replaceChildren();
	document.getElementById("nav").hidden = true;
	const main = document.getElementById("main");
	const err = h("p", { id: "login-error", class: "error", role: "alert", hidden: !message }, message || "");
	const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false", placeholder: "bsk_…", "aria-describedby": "token-help" });
	const form = h("form", { id: "login", class: "card narrow" },
		h("h1", {}, "Sign in to Backstop"),
		h("label", { for: "token" }, "API token"), input,
		h("p", { id: "token-help", class: "muted" }, "The token stays in this browser tab only (session storage) and is sent in a header, never in a link. Create one with backstopctl or POST /v1/tokens."),
		err,
		h("button", { type: "submit", class: "primary" }, "Sign in"));
	form.addEventListener("submit", async (e) => {
		e.preventDefault();
		err.hidden = true;
		const tok = input.value.trim();
		try {
			const me = await api.request("GET", "/v1/whoami", { tokenOverride: tok, what: "Sign-in" });
			api.setToken(tok);
			S.me = me;
			if (location.hash === "#/") route();
			else location.hash = "#/"; // hashchange routes
		} catch (ex) {
			err.textContent = ex instanceof api.ApiError ? ex.text : String(ex);
			err.hidden = false;
			input.focus();
		}
	});
	replace(main, form);
	input.focus();
}

function signOut(message) {
	api.clearToken();
	S.me = null;
	location.hash = "#/login";
	loginView(message);
}

api.setUnauthorizedHandler((err) => signOut("Signed out: " + err.text));

// ---------- the cluster's live state ----------

let stopStream = null;
let pollTimer = null;
let refreshTimer = null;
let current = null; // the mounted view {update()}

function stopCluster() {
	if (stopStream) stopStream();
	stopStream = null;
	clearInterval(pollTimer);
	S.cid = "";
}

async function startCluster(cid) {
	stopCluster();
	S.cid = cid;
	Object.assign(S, { nodes: [], hiers: [], paths: [], cp: null, incidents: [], events: [], fenced: {}, lastRefresh: 0 });
	await refresh(true);
	let after = 0;
	try {
		after = await loadRecentEvents();
	} catch (e) {
		showError(e);
	}
	if (S.cid !== cid) return;
	stopStream = api.follow(cid, after, onEvent, (state, detail) => {
		// since: when it became live, or when it stopped being live (not
		// reset by each failed reconnect, so the alert below does come).
		const wasLive = S.stream.state === "live";
		if (wasLive !== (state === "live")) S.stream = { state, detail, since: Date.now() };
		else Object.assign(S.stream, { state, detail });
		if (state === "live") scheduleRefresh(); // catch up on what changed while away
		render();
	});
	pollTimer = setInterval(() => refresh(false), 2000);
}

// loadRecentEvents reads the last MAX_EVENTS events (the log is read
// oldest first, so it finds the newest seq first) and returns the seq to
// follow the stream from.
async function loadRecentEvents() {
	const url = (after, limit) => cpath(`/events?after=${after}&limit=${limit}`);
	let page = await api.get(url(0, 1000), "Loading events");
	let after = 0;
	if (page.items.length === 1000) {
		// A long log: find its newest seq (doubling, then bisecting) and
		// read only its tail.
		let lo = page.last_seq, hi = lo * 2;
		while ((await api.get(url(hi, 1), "Loading events")).items.length > 0) { lo = hi; hi *= 2; }
		while (hi - lo > 1) {
			const mid = Math.floor((lo + hi) / 2);
			if ((await api.get(url(mid, 1), "Loading events")).items.length > 0) lo = mid; else hi = mid;
		}
		after = Math.max(0, lo + 1 - MAX_EVENTS);
		page = await api.get(url(after, 1000), "Loading events");
	}
	const items = [...page.items];
	after = page.last_seq;
	while (page.items.length === 1000) {
		page = await api.get(url(after, 1000), "Loading events");
		items.push(...page.items);
		after = page.last_seq;
	}
	for (const ev of items) noteEvent(ev);
	return after;
}

function noteEvent(ev) {
	S.events.push(ev);
	if (S.events.length > MAX_EVENTS) S.events.splice(0, S.events.length - MAX_EVENTS);
	const nid = ev.subject && ev.subject.node_id;
	if (nid && (ev.type === "fence.succeeded" || ev.type === "node.self_fenced")) S.fenced[nid] = ev;
	if (nid && ev.type === "node.up") delete S.fenced[nid];
}

// NODE_STATES are events that set a node's state by themselves: applied at
// once, so a crash shows without waiting for the refresh that follows.
const NODE_STATES = { "node.down": "down", "node.up": "up", "node.unreachable": "unreachable" };

function onEvent(ev) {
	eventGen++;
	noteEvent(ev);
	const n = ev.subject && S.nodes.find((x) => x.id === ev.subject.node_id);
	if (n && NODE_STATES[ev.type]) n.state = NODE_STATES[ev.type];
	if (n && ev.type === "node.maintenance_started") n.maintenance = true;
	if (n && ev.type === "node.maintenance_ended") n.maintenance = false;
	scheduleRefresh();
	if (current && current.onEvent) current.onEvent(ev);
	render();
}

function scheduleRefresh() {
	clearTimeout(refreshTimer);
	refreshTimer = setTimeout(() => refresh(false), 80);
}

let eventGen = 0; // counts events, so a refresh can tell it raced one

export async function refresh(initial) {
	const cid = S.cid;
	if (!cid) return;
	const gen = eventGen;
	try {
		const [nodes, hiers, paths, cp, incidents] = await Promise.all([
			api.all(cpath("/nodes"), "Loading nodes"),
			api.all(cpath("/hierarchies"), "Loading hierarchies"),
			initial || S.paths.length === 0 ? api.all(cpath("/paths"), "Loading paths") : S.paths,
			api.get("/v1/control-plane", "Loading the control plane"),
			api.all(cpath("/incidents"), "Loading incidents"),
		]);
		if (S.cid !== cid) return;
		// Read before the last event arrived: the refresh that event
		// scheduled brings newer data; showing this one would flicker back.
		if (gen !== eventGen && Date.now() - S.lastRefresh < 2000) return;
		Object.assign(S, { nodes, hiers, paths, cp, incidents, lastRefresh: Date.now(), refreshError: null });
	} catch (e) {
		if (S.cid !== cid) return;
		S.refreshError = e;
		if (initial) showError(e);
		if (e instanceof api.ApiError && e.status === 0 && S.stream.state === "live" && stopStream) stopStream.reconnect();
	}
	render();
}

// ---------- shell and routing ----------

function shell() {
	const who = document.getElementById("who");
	replace(who,
		S.clusters.length > 1 ? h("label", { class: "inline" }, "Cluster ",
			h("select", { id: "cluster-select", onchange: (e) => { location.hash = `#/c/${e.target.value}`; } },
				S.clusters.map((c) => h("option", { value: c.id, selected: c.id === S.cid }, c.name)))) :
			h("span", { class: "cluster-name" }, (S.clusters[0] || {}).name || ""),
		h("span", { id: "role", class: `role role-${S.me.role}`, title: "What this token may do" }, `${S.me.name} · ${S.me.role}`),
		h("button", { type: "button", id: "signout", onclick: () => signOut("Signed out.") }, "Sign out"));
	const nav = document.getElementById("nav");
	nav.hidden = false;
	const here = location.hash;
	replace(nav, [["", "Overview"], ["/incidents", "Incidents"], ["/events", "Events"], ["/whatif", "What if…"]].map(([p, label]) =>
		h("a", { href: `#/c/${S.cid}${p}`, "aria-current": here === `#/c/${S.cid}${p}` ? "page" : undefined }, label)));
}

let routeSeq = 0; // the newest route() call; older ones give up after each await

export async function route() {
	const my = ++routeSeq;
	const stale = () => my !== routeSeq;
	if (!api.token()) return loginView();
	if (!S.me) {
		try {
			S.me = await api.get("/v1/whoami", "Checking the token");
		} catch (e) {
			return loginView(e instanceof api.ApiError ? e.text : String(e));
		}
		if (stale()) return;
	}
	const m = location.hash.match(/^#\/c\/([0-9a-f-]{36})(?:\/(h)\/([0-9a-f-]{36})|\/(incidents|events|whatif))?$/);
	if (!m) {
		try {
			S.clusters = await api.all("/v1/clusters", "Loading clusters");
		} catch (e) {
			showError(e);
			return;
		}
		if (stale()) return;
		if (S.clusters.length === 0) {
			replace(document.getElementById("main"), h("div", { class: "card" }, h("h1", {}, "No cluster yet"),
				h("p", {}, "Create one with backstopctl or POST /v1/clusters; it appears here.")));
			return;
		}
		location.replace(`#/c/${S.clusters[0].id}`); // hashchange routes
		return;
	}
	const [, cid, , hid, page] = m;
	if (S.clusters.length === 0) {
		try { S.clusters = await api.all("/v1/clusters", "Loading clusters"); } catch (e) { showError(e); }
		if (stale()) return;
	}
	const main = document.getElementById("main");
	if (cid !== S.cid) {
		current = null;
		replace(main, h("p", { class: "muted" }, "Loading…"));
		await startCluster(cid);
		if (stale()) return;
	}
	shell();
	if (hid) current = hierarchyView(hid);
	else if (page === "incidents") current = incidentsView();
	else if (page === "events") current = eventsView();
	else if (page === "whatif") current = whatIfView();
	else current = overviewView();
	current.mount(main);
	render();
}

// render updates the mounted view and the status strip.
export function render() {
	const strip = document.getElementById("status");
	if (S.cid && S.me) {
		const st = S.stream;
		const live = st.state === "live";
		replace(strip,
			h("span", { id: "live", class: `live live-${st.state}`, "data-state": st.state },
				live ? "● Live" : st.state === "connecting" ? "◌ Connecting…" : "✖ Live updates lost"),
			!live && st.detail ? h("span", { class: "muted" }, " — " + st.detail) : null,
			h("span", { class: "muted" }, ` · data from ${S.lastRefresh ? fmtTime(new Date(S.lastRefresh).toISOString()) : "—"}`),
			S.cp ? h("span", { id: "leader" }, ` · leader ${S.cp.leader_id || "none"} · term ${S.cp.term}`) : null);
	} else strip.replaceChildren();
	if (current && S.cid) current.update();
}

// ---------- overview ----------

// alerts lists what needs an operator, worst first.
export function alerts() {
	const out = [];
	const st = S.stream;
	if (st.state !== "live" && Date.now() - st.since > 3000) out.push(["crit", `Live updates lost since ${fmtTime(new Date(st.since).toISOString())}: what you see may be stale. ${st.detail || ""}`]);
	if (S.refreshError) out.push(["crit", `Cannot refresh: ${S.refreshError.text || S.refreshError}`]);
	if (S.cp && !S.cp.leader_id) out.push(["crit", "No backstopd replica leads: failures are not being handled."]);
	for (const n of S.nodes) {
		const s = nodeState(n);
		if (s === "down" || s === "fenced") out.push(["crit", `Node ${n.name} is ${s === "fenced" ? "down and fenced" : "down"}.`]);
		else if (s === "unreachable") out.push(["warn", `Node ${n.name} is unreachable: the control plane lost it but a peer still sees it; nothing moves.`]);
	}
	for (const x of S.hiers) {
		const p = x.placement;
		if (p.state === "failed") out.push(["crit", `Hierarchy ${x.name} FAILED${p.node_id ? " on " + nodeName(p.node_id) : ""}: ${p.detail || "no node can take it"}.`]);
	}
	for (const x of S.hiers) {
		const host = S.nodes.find((n) => n.id === x.placement.node_id);
		if (host && x.placement.state === "in_service" && ["down", "fenced"].includes(nodeState(host)) && !S.incidents.some((i) => i.state === "open" && i.hierarchy_id === x.id)) {
			out.push(["crit", `Hierarchy ${x.name} was in service on ${host.name}, which is down: waiting for the failover.`]);
		}
	}
	for (const i of S.incidents) {
		if (i.state === "open") out.push(["busy", `${cap(i.kind)} of ${hierName(i.hierarchy_id)} in progress: ${nodeName(i.from_node_id)} → ${nodeName(i.to_node_id)} (${i.reason}).`]);
	}
	for (const x of S.hiers) {
		const p = x.placement;
		if (p.state === "out_of_service" && x.priorities.length > 0) out.push(["warn", `Hierarchy ${x.name} is out of service: nothing runs it.`]);
	}
	const downPaths = new Set();
	for (const n of S.nodes) {
		for (const r of pathReports(n)) if (r.state === "down" && !["down", "fenced"].includes(nodeState(n))) {
			const peer = S.nodes.find((x) => x.id === r.peer_node_id);
			if (peer && !["down", "fenced"].includes(nodeState(peer))) downPaths.add(`${n.name} → ${peer.name}`);
		}
	}
	if (downPaths.size) out.push(["warn", `Communication path down: ${[...downPaths].join(", ")}.`]);
	return out;
}

export const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);
export const pathReports = (n) => (n.agent && n.agent.report && n.agent.report.paths) || [];

export function alertBox() {
	const list = alerts();
	if (list.length === 0) return h("div", { id: "alerts", class: "alerts calm" }, "✓ All nodes up, every hierarchy in service, nothing in progress.");
	return h("ul", { id: "alerts", class: "alerts", "aria-live": "polite" },
		list.map(([cls, text]) => h("li", { class: `alert a-${cls}` }, text)));
}

function overviewView() {
	let el;
	return {
		mount(main) {
			el = h("div", { id: "overview" });
			replace(main, el);
		},
		update() {
			const lease = (S.clusters.find((c) => c.id === S.cid) || {}).timing;
			replace(el,
				alertBox(),
				h("section", { class: "card" }, h("h2", {}, "Hierarchies"), hierTable()),
				h("section", { class: "card" }, h("h2", {}, "Nodes"), nodeTable(lease)),
				h("section", { class: "card" }, h("h2", {}, "Recent critical and warning events"), recentEvents()));
		},
	};
}

function hierTable() {
	if (S.hiers.length === 0) return h("p", { class: "muted" }, "No hierarchy protects anything yet.");
	const rank = { failed: 0, starting: 1, stopping: 1, out_of_service: 2, in_service: 3 };
	const rows = [...S.hiers].sort((a, b) => (rank[a.placement.state] - rank[b.placement.state]) || a.name.localeCompare(b.name));
	return h("div", { class: "scroll" }, h("table", { id: "hier-table" },
		h("thead", {}, h("tr", {}, ["Hierarchy", "State", "Runs on", "Epoch", "Priorities (1 = primary)", ""].map((t) => h("th", { scope: "col" }, t)))),
		h("tbody", {}, rows.map((x) => {
			const p = x.placement;
			const host = S.nodes.find((n) => n.id === p.node_id);
			const hostState = host ? nodeState(host) : "";
			const on = p.node_id && p.state !== "out_of_service" ? [nodeName(p.node_id),
				host && hostState !== "up" ? [" ", badge(hostState)] : null] : "—";
			return h("tr", { "data-hierarchy": x.name, class: `row-${p.state}` },
				h("th", { scope: "row" }, h("a", { href: `#/c/${S.cid}/h/${x.id}`, "data-key": "h-" + x.id }, x.name)),
				h("td", { class: "state" }, badge(p.state)),
				h("td", { class: "node" }, on),
				h("td", { class: "num" }, String(p.epoch)),
				h("td", {}, h("ol", { class: "prio" }, [...x.priorities].sort((a, b) => a.priority - b.priority).map((pr) => {
					const n = S.nodes.find((y) => y.id === pr.node_id);
					const here = pr.node_id === p.node_id && p.state !== "out_of_service";
					return h("li", { class: here ? "here" : "", title: n ? nodeState(n) : "" }, `${pr.priority} ${nodeName(pr.node_id)}${here ? " ◀" : ""}`, n && nodeState(n) !== "up" ? ` (${nodeState(n)})` : "");
				}))),
				h("td", { class: "actions" }, hierActions(x)));
		}))));
}

// hierActions are the buttons an operator gets for a hierarchy; a viewer
// gets none.
export function hierActions(x) {
	if (!can("operator")) return null;
	const p = x.placement;
	const out = [];
	if (p.state === "in_service") {
		out.push(h("button", { type: "button", class: "act", "data-key": "so-" + x.id, "data-action": "switchover", onclick: () => switchoverDialog(x) }, "Switch over…"));
		out.push(h("button", { type: "button", class: "act", "data-key": "oos-" + x.id, "data-action": "out-of-service", onclick: () => serviceDialog(x, "out") }, "Take out of service…"));
	} else if (p.state === "out_of_service" || p.state === "failed") {
		out.push(h("button", { type: "button", class: "act", "data-key": "is-" + x.id, "data-action": "in-service", onclick: () => serviceDialog(x, "in") }, "Bring in service…"));
	}
	return out;
}

function nodeTable(timing) {
	if (S.nodes.length === 0) return h("p", { class: "muted" }, "No node yet.");
	const now = Date.now();
	return h("div", { class: "scroll" }, h("table", { id: "node-table" },
		h("thead", {}, h("tr", {}, ["Node", "State", "Runs", "Last heartbeat", "Paths to peers (state · RTT · loss)", ""].map((t) => h("th", { scope: "col" }, t)))),
		h("tbody", {}, S.nodes.map((n) => {
			const st = nodeState(n);
			const runs = S.hiers.filter((x) => x.placement.node_id === n.id && x.placement.state !== "out_of_service").map((x) => x.name);
			const hb = n.agent && n.agent.last_heartbeat_at;
			const late = hb && timing && now - new Date(hb).getTime() > 2 * timing.lease_ttl_ms;
			return h("tr", { "data-node": n.name, class: `row-${st}` },
				h("th", { scope: "row" }, n.name, n.agent ? h("div", { class: "muted small" }, n.agent.facts.hostname) : null),
				h("td", { class: "state" }, badge(st)),
				h("td", {}, runs.join(", ") || "—"),
				h("td", { class: late ? "late" : "" }, n.agent ? ago(hb, now) : "not enrolled"),
				h("td", {}, pathCell(n, st)),
				h("td", { class: "actions" }, can("operator") && n.agent ? (n.maintenance ?
					h("button", { type: "button", class: "act", "data-key": "mo-" + n.id, "data-action": "maintenance-off", onclick: () => maintenanceDialog(n, false) }, "End maintenance…") :
					h("button", { type: "button", class: "act", "data-key": "mi-" + n.id, "data-action": "maintenance-on", onclick: () => maintenanceDialog(n, true) }, "Maintenance…")) : null));
		}))));
}

function pathCell(n, st) {
	const reps = pathReports(n);
	if (st === "down" || st === "fenced") return h("span", { class: "muted" }, "(node down: its last report is stale)");
	if (reps.length === 0) return h("span", { class: "muted" }, n.agent ? "no path report yet" : "—");
	return h("ul", { class: "paths" }, reps.map((r) => {
		const path = S.paths.find((p) => p.id === r.path_id);
		const rtt = r.rtt_ms !== undefined ? `${r.rtt_ms < 10 ? r.rtt_ms.toFixed(2) : Math.round(r.rtt_ms)} ms` : "—";
		const loss = r.loss !== undefined ? `${Math.round(r.loss * 100)}% loss` : "";
		return h("li", { class: `path p-${r.state}`, title: path ? `${path.local_address} → ${path.remote_address}` : "" },
			badge(r.state), ` → ${nodeName(r.peer_node_id)} · ${rtt}${loss ? " · " + loss : ""}`);
	}));
}

function recentEvents() {
	const evs = S.events.filter((e) => e.severity !== "info").slice(-8).reverse();
	if (evs.length === 0) return h("p", { class: "muted" }, "None since the log began.");
	return h("ul", { class: "evlist" }, evs.map(eventLine), h("li", {}, h("a", { href: `#/c/${S.cid}/events` }, "All events →")));
}

export function eventLine(e) {
	return h("li", { class: `ev sev-${e.severity}`, "data-type": e.type },
		h("time", { datetime: e.at }, fmtTime(e.at)), " ", badge(e.severity), " ",
		h("code", {}, e.type), " ", e.message);
}

export { fmtMs };

// ---------- start ----------

window.addEventListener("hashchange", () => { if (location.hash !== "#/login") route(); });
window.addEventListener("unhandledrejection", (e) => showError(e.reason));
route();
