// views.js: the hierarchy view, incidents, the event log and what-if.
import * as api from "./api.js";
import { h, replace, badge, fmtTime, fmtDateTime, ago, fmtMs } from "./util.js";
import { S, can, cpath, nodeName, hierName, nodeState, alertBox, hierActions, eventLine, cap, showError } from "./app.js";
import { startOrder, clearMarkDialog } from "./actions.js";

// ---------- hierarchy ----------

export function hierarchyView(hid) {
	let el, explainBox;
	let explain = null, explainErr = null, loading = false, lastEpoch = -1, lastSeq = 0, lastGen = -1;
	const load = async () => {
		if (loading) return;
		loading = true;
		try {
			explain = await api.get(cpath(`/hierarchies/${hid}/explain`), "Explain");
			explainErr = null;
		} catch (e) {
			explainErr = e;
		}
		loading = false;
		draw();
	};
	const draw = () => {
		const x = S.hiers.find((y) => y.id === hid);
		if (!x) {
			replace(el, h("p", { class: "muted" }, S.hiers.length ? "No such hierarchy in this cluster." : "Loading…"));
			return;
		}
		const p = x.placement;
		replace(el,
			alertBox(),
			h("section", { class: "card" },
				h("h1", {}, x.name, " ", badge(p.state), p.node_id && p.state !== "out_of_service" ? ` on ${nodeName(p.node_id)}` : ""),
				x.description ? h("p", {}, x.description) : null,
				h("p", { class: "muted" }, `epoch ${p.epoch} · switchback ${x.switchback}${x.exclusivity_group ? " · exclusivity group " + x.exclusivity_group : ""} · changed ${ago(p.updated_at)}`),
				p.detail ? h("p", { class: p.state === "failed" ? "alert a-crit" : "muted" }, p.detail) : null,
				h("div", { class: "actions" }, hierActions(x))),
			h("section", { class: "card" }, h("h2", {}, "Resources"), resourceTree(x)),
			h("section", { class: "card", id: "explain" }, h("h2", {}, "Why it is here"), explainBlock(x)),
			h("section", { class: "card" }, h("h2", {}, "Placement history"), history(x)));
	};
	const explainBlock = (x) => {
		if (explainErr) return h("p", { class: "error" }, explainErr.text || String(explainErr));
		if (!explain) return h("p", { class: "muted" }, "Loading…");
		const e = explain, d = e.last_decision, p = e.placement;
		const sentences = [];
		sentences.push(p.state === "out_of_service" || !p.node_id ? `${x.name} is out of service.` :
			`${x.name} is ${p.state.replace(/_/g, " ")} on ${nodeName(p.node_id)} at epoch ${p.epoch}.`);
		if (d) {
			const kinds = { failover: "failed over", switchback: "switched back", switchover: "was switched over by an operator", fail: "could not be placed", switchback_possible: "could switch back" };
			let s = `Last decision (${fmtDateTime(d.at)}${d.term ? ", leader term " + d.term : ""}): it ${kinds[d.kind] || d.kind}`;
			if (d.from_node_id) s += ` from ${nodeName(d.from_node_id)}`;
			if (d.to_node_id) s += ` to ${nodeName(d.to_node_id)}`;
			s += ` because ${d.reason}.`;
			sentences.push(s);
		} else sentences.push("No failover decision was recorded for it yet (it was placed by hand).");
		sentences.push(e.next_node_id ? `If ${nodeName(p.node_id)} failed now, it would go to ${nodeName(e.next_node_id)}.` :
			`If its node failed now, no node could take it: it would fail.`);
		const marks = e.failed_marks || [];
		if (marks.length) sentences.push(`It failed on ${marks.map((m) => nodeName(m.node_id)).join(", ")}; those nodes are excluded until an operator clears the mark.`);
		const cands = e.next_candidates || [];
		return h("div", {},
			h("div", { id: "explain-text" }, sentences.map((s) => h("p", {}, s))),
			marks.length ? h("div", { id: "failed-marks" }, h("h3", {}, "Failed marks"), h("ul", {}, marks.map((m) => h("li", { class: "alert a-crit" },
				`${nodeName(m.node_id)}: ${m.reason} (${fmtDateTime(m.at)}) `,
				can("operator") ? h("button", { type: "button", class: "act", "data-key": "cm-" + m.node_id, "data-action": "clear-mark", onclick: () => clearMarkDialog(x, m) }, "Clear failed mark…") :
					h("span", { class: "muted" }, "(an operator can clear it)"))))) : null,
			h("h3", {}, "Candidates if its node failed now"),
			cands.length ? h("table", { id: "candidates" },
				h("thead", {}, h("tr", {}, ["Node", "Priority", "Can take it?"].map((t) => h("th", { scope: "col" }, t)))),
				h("tbody", {}, cands.map((c) => h("tr", { class: c.rejected ? "rejected" : "" },
					h("td", {}, c.node), h("td", { class: "num" }, String(c.priority)),
					h("td", {}, c.rejected ? h("span", {}, badge("failed", ""), " no: " + c.rejected) : badge("up", "— yes")))))) :
				h("p", { class: "muted" }, "No other node has a priority for it."),
			d && d.candidates && d.candidates.length ? h("details", {}, h("summary", {}, "Candidates at the last decision"),
				h("table", {}, h("tbody", {}, d.candidates.map((c) => h("tr", {}, h("td", {}, c.node), h("td", { class: "num" }, String(c.priority)), h("td", {}, c.rejected ? "rejected: " + c.rejected : "eligible")))))) : null);
	};
	return {
		mount(main) {
			el = h("div", { id: "hierarchy" });
			replace(main, el);
			load();
		},
		update() {
			const x = S.hiers.find((y) => y.id === hid);
			const ev = S.events.length ? S.events[S.events.length - 1].seq : 0;
			if (x && (x.placement.epoch !== lastEpoch || ev !== lastSeq || S.gen !== lastGen)) {
				lastEpoch = x.placement.epoch;
				lastSeq = ev;
				lastGen = S.gen;
				load();
			}
			draw();
		},
	};
}

// resourceTree draws the DAG top-down: what nothing depends on first, its
// dependencies nested under it; each with its last checks on its node.
function resourceTree(x) {
	const p = x.placement;
	const node = S.nodes.find((n) => n.id === p.node_id);
	const health = (node && node.agent && node.agent.report && node.agent.report.resources || []).filter((r) => r.hierarchy_id === x.id);
	const byName = new Map(x.resources.map((r) => [r.name, r]));
	const needed = new Set(x.resources.flatMap((r) => r.depends_on || []));
	const roots = x.resources.filter((r) => !needed.has(r.name));
	const running = p.state === "in_service" || p.state === "starting" || p.state === "stopping";
	const item = (r, depth) => {
		const hl = health.find((y) => y.resource === r.name);
		let st;
		if (!running) st = badge("out_of_service", "");
		else if (!hl) st = badge("pending", "— no check reported yet");
		else if ((hl.quick && !hl.quick.ok) || (hl.deep && !hl.deep.ok)) st = badge("failed", "— " + ((hl.quick && !hl.quick.ok ? hl.quick.detail : hl.deep.detail) || "check failed"));
		else st = badge("up", "— checks pass");
		const checks = hl ? [hl.quick ? `quick ${hl.quick.ok ? "ok" : "FAILED"} ${ago(hl.quick.at)}` : null,
			hl.deep ? `deep ${hl.deep.ok ? "ok" : "FAILED"} ${ago(hl.deep.at)}` : null,
			hl.restarts ? `${hl.restarts} local restart(s)` : null,
			hl.check_failures ? `${hl.check_failures} failed check(s) since agent start` : null].filter(Boolean).join(" · ") : "";
		return h("li", { "data-resource": r.name, style: `--depth:${depth}` },
			h("span", { class: "res-name" }, r.name), " ", h("span", { class: "kind" }, r.kind), " ", st,
			checks ? h("div", { class: "muted small" }, checks) : null,
			(r.depends_on || []).length ? h("ul", {}, r.depends_on.map((d) => byName.has(d) ? item(byName.get(d), depth + 1) : h("li", {}, d + " (unknown)"))) : null);
	};
	return h("div", {},
		h("ul", { class: "tree", id: "resource-tree" }, roots.map((r) => item(r, 0))),
		h("p", { class: "muted small" }, `Start order: ${startOrder(x.resources).join(" → ")}; stop order is the reverse.${node ? " Checks as reported by " + node.name + "'s agent." : ""}`));
}

function history(x) {
	const inc = S.incidents.filter((i) => i.hierarchy_id === x.id).slice(-10).reverse();
	const evs = S.events.filter((e) => e.subject && e.subject.hierarchy_id === x.id).slice(-15).reverse();
	return h("div", {},
		inc.length ? h("ul", { class: "history" }, inc.map((i) => h("li", {},
			h("time", { datetime: i.detected_at }, fmtDateTime(i.detected_at)), " ", badge(i.state === "open" ? "open" : i.state), " ",
			`${cap(i.kind)} ${nodeName(i.from_node_id)} → ${nodeName(i.to_node_id)}: ${i.reason}`,
			i.recovery_ms !== undefined ? ` · recovered in ${fmtMs(i.recovery_ms)}` : ""))) : h("p", { class: "muted" }, "It never moved."),
		evs.length ? h("details", {}, h("summary", {}, "Its recent events"), h("ul", { class: "evlist" }, evs.map(eventLine))) : null,
		h("p", {}, h("a", { href: `#/c/${S.cid}/incidents` }, "All incidents →")));
}

// ---------- incidents ----------

const PHASES = [
	["detected_at", "detected"], ["fenced_at", "fenced"], ["decided_at", "decided"],
	["stopped_at", "stopped"], ["started_at", "started"], ["first_deep_check_at", "first deep check"],
];

// SEGMENT names what happens before each phase is reached.
const SEGMENT = { fenced_at: "fencing", decided_at: "deciding", stopped_at: "stopping", started_at: "bringing up", first_deep_check_at: "until deep check" };

export function incidentsView() {
	let el;
	return {
		mount(main) { el = h("div", { id: "incidents" }); replace(main, el); },
		update() {
			const list = [...S.incidents].reverse();
			replace(el, h("h1", {}, "Incidents"),
				h("p", { class: "muted" }, "Every failover, switchover and switchback, newest first, with its measured timeline. Recovery time runs from detection to in service; for a failover, detection itself comes one lease (plus grace) after the node's last heartbeat."),
				list.length ? list.map(incidentCard) : h("p", { class: "muted" }, "No incident yet."));
		},
	};
}

function incidentCard(i) {
	const t0 = new Date(i.detected_at).getTime();
	const marks = PHASES.filter(([k]) => i[k]).map(([k, label]) => ({ k, label, t: new Date(i[k]).getTime() - t0 }));
	const end = Math.max(1, ...marks.map((m) => m.t), i.state === "open" ? Date.now() - t0 : 0);
	const seg = [];
	for (let j = 0; j + 1 < marks.length; j++) {
		const dt = marks[j + 1].t - marks[j].t, w = (dt / end) * 100;
		seg.push(h("div", { class: `seg seg-${marks[j + 1].k}`, style: `left:${(marks[j].t / end) * 100}%;width:${Math.max(0.4, w)}%`, title: `${marks[j].label} → ${marks[j + 1].label}: ${fmtMs(dt)}` },
			w > 12 ? h("span", {}, `${SEGMENT[marks[j + 1].k]} ${fmtMs(dt)}`) : null));
	}
	const recoveredAt = i.started_at ? new Date(i.started_at).getTime() - t0 : null;
	return h("article", { class: `card incident inc-${i.state}`, "data-incident": i.id, "data-kind": i.kind },
		h("header", {},
			h("h2", {}, `${cap(i.kind)} of ${hierName(i.hierarchy_id)}`, " ", badge(i.state === "open" ? "open" : i.state)),
			h("div", { class: "recovery" }, i.recovery_ms !== undefined ? [h("span", { class: "big" }, fmtMs(i.recovery_ms)), h("span", { class: "muted" }, " recovery")] :
				h("span", { class: "muted" }, i.state === "open" ? "recovering…" : "no recovery"))),
		h("p", {}, `${nodeName(i.from_node_id)} → ${nodeName(i.to_node_id)} · ${i.reason} · ${fmtDateTime(i.detected_at)}`),
		h("div", { class: "timebar", role: "img", "aria-label": `timeline: ${marks.map((m) => `${m.label} at +${fmtMs(m.t)}`).join(", ")}` },
			seg,
			recoveredAt !== null ? h("div", { class: "recovered", style: `left:${(recoveredAt / end) * 100}%`, title: "in service" }) : null,
			marks.map((m, j) => h("div", { class: `tick lvl-${j % 3}`, style: `left:${(m.t / end) * 100}%` }, h("span", {}, m.label)))),
		h("table", { class: "phases" },
			h("thead", {}, h("tr", {}, ["Phase", "At", "Since detected"].map((t) => h("th", { scope: "col" }, t)))),
			h("tbody", {}, PHASES.map(([k, label]) => h("tr", { class: i[k] ? "" : "muted" },
				h("td", {}, label), h("td", {}, i[k] ? fmtTime(i[k]) : "—"), h("td", { class: "num" }, i[k] ? "+" + fmtMs(new Date(i[k]).getTime() - t0) : "—"))))));
}

// ---------- events ----------

export function eventsView() {
	let el, listBox, count;
	const f = { severity: "", type: "", text: "", paused: false, shown: [] };
	const matches = (e) => {
		const rank = { info: 0, warning: 1, critical: 2 };
		if (f.severity && rank[e.severity] < rank[f.severity]) return false;
		if (f.type && !e.type.startsWith(f.type)) return false;
		if (f.text && !(e.message + " " + e.type + " " + JSON.stringify(e.subject)).toLowerCase().includes(f.text.toLowerCase())) return false;
		return true;
	};
	const drawList = () => {
		if (!f.paused) f.shown = S.events.filter(matches).slice(-500).reverse();
		replace(count, `${f.shown.length} shown of ${S.events.length} loaded${f.paused ? " · paused" : " · live"}`);
		replace(listBox, f.shown.length ? f.shown.map((e) => h("li", { class: `ev sev-${e.severity}`, "data-type": e.type, "data-seq": e.seq },
			h("time", { datetime: e.at }, fmtDateTime(e.at)), " ", badge(e.severity), " ", h("code", {}, e.type), " ", e.message,
			Object.keys(e.subject || {}).length ? h("span", { class: "muted small" }, " " + Object.entries(e.subject).map(([k, v]) => `${k.replace(/_id$/, "")}=${k === "node_id" ? nodeName(v) : k === "hierarchy_id" ? hierName(v) : v.slice(0, 8)}`).join(" ")) : null)) :
			h("li", { class: "muted" }, "No event matches."));
	};
	const types = () => [...new Set(S.events.map((e) => e.type.split(".")[0]))].sort();
	return {
		mount(main) {
			listBox = h("ul", { class: "evlist", id: "event-list" });
			count = h("span", { id: "event-count", class: "muted" });
			const sev = h("select", { id: "f-severity", onchange: (e) => { f.severity = e.target.value; drawList(); } },
				h("option", { value: "" }, "all"), h("option", { value: "warning" }, "warning and critical"), h("option", { value: "critical" }, "critical only"));
			const typ = h("input", { id: "f-type", list: "f-types", placeholder: "e.g. node. or failover", oninput: (e) => { f.type = e.target.value.trim(); drawList(); } });
			const txt = h("input", { id: "f-text", type: "search", placeholder: "node name, message…", oninput: (e) => { f.text = e.target.value.trim(); drawList(); } });
			const pause = h("button", { type: "button", id: "f-pause", "aria-pressed": "false", onclick: () => { f.paused = !f.paused; pause.setAttribute("aria-pressed", String(f.paused)); pause.textContent = f.paused ? "Resume" : "Pause"; drawList(); } }, "Pause");
			el = h("div", { id: "events" }, h("h1", {}, "Events"),
				h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
					h("label", {}, "Severity ", sev), h("label", {}, "Type starts with ", typ), h("datalist", { id: "f-types" }, types().map((t) => h("option", { value: t + "." }))),
					h("label", {}, "Contains ", txt), pause, count),
				listBox);
			replace(main, el);
		},
		update() { drawList(); },
	};
}

// ---------- what-if ----------

export function whatIfView() {
	let el, form, out;
	const pick = { nodes: new Set(), paths: new Set(), hiers: new Set() };
	let sig = "";
	const drawForm = () => {
		const s = JSON.stringify([S.nodes.map((n) => n.id + nodeState(n)), S.paths.map((p) => p.link_id), S.hiers.map((x) => x.id + x.placement.node_id)]);
		if (s === sig) return;
		sig = s;
		const links = [...new Map(S.paths.map((p) => [p.link_id, p])).values()];
		const box = (set, id, label, key) => h("label", { class: "check" },
			h("input", { type: "checkbox", "data-key": key, "data-pick": key, checked: set.has(id), onchange: (e) => { if (e.target.checked) set.add(id); else set.delete(id); } }), " ", label);
		replace(form,
			h("fieldset", {}, h("legend", {}, "Nodes that crash"), S.nodes.map((n) => box(pick.nodes, n.id, `${n.name} (${nodeState(n)})`, "n-" + n.name))),
			h("fieldset", {}, h("legend", {}, "Paths that die"), links.length ? links.map((p) => box(pick.paths, p.id, `${nodeName(p.local_node_id)} ↔ ${nodeName(p.remote_node_id)} (${p.local_address} ↔ ${p.remote_address})`, "p-" + p.link_id)) : h("p", { class: "muted" }, "No path.")),
			h("fieldset", {}, h("legend", {}, "Hierarchies whose resources fail (past local recovery)"), S.hiers.map((x) => box(pick.hiers, x.id, x.name, "r-" + x.name))),
			h("button", { type: "submit", class: "primary", id: "simulate" }, "Simulate"));
	};
	const run = async (e) => {
		e.preventDefault();
		replace(out, h("p", { class: "muted" }, "Simulating…"));
		try {
			const res = await api.request("POST", cpath("/simulate"), { body: { node_failures: [...pick.nodes], path_failures: [...pick.paths], resource_failures: [...pick.hiers] }, what: "Simulate" });
			replace(out, simResult(res));
		} catch (ex) {
			replace(out, h("p", { class: "error", role: "alert" }, ex.text || String(ex)));
		}
	};
	return {
		mount(main) {
			form = h("form", { id: "whatif-form", class: "card", onsubmit: run });
			out = h("div", { id: "whatif-result", "aria-live": "polite" });
			el = h("div", { id: "whatif" }, h("h1", {}, "What if…"),
				h("p", { class: "muted" }, "Pick failures; the engine says where every hierarchy would go, from the current state, without changing anything."), form, out);
			replace(main, el);
			drawForm();
		},
		update() { drawForm(); },
	};
}

function simResult(res) {
	const dec = new Map(res.decisions.map((d) => [d.hierarchy_id, d]));
	return h("section", { class: "card" }, h("h2", {}, "Outcome"),
		h("table", { id: "sim-table" },
			h("thead", {}, h("tr", {}, ["Hierarchy", "Now", "Would be", "Why"].map((t) => h("th", { scope: "col" }, t)))),
			h("tbody", {}, res.placements.map((p) => {
				const x = S.hiers.find((y) => y.id === p.hierarchy_id) || { name: p.hierarchy_id, placement: {} };
				const d = dec.get(p.hierarchy_id);
				const now = x.placement.node_id && x.placement.state !== "out_of_service" ? `${nodeName(x.placement.node_id)}` : "—";
				const moved = p.node_id !== x.placement.node_id;
				return h("tr", { "data-hierarchy": x.name, class: p.state === "failed" ? "row-failed" : moved ? "row-moved" : "" },
					h("th", { scope: "row" }, x.name), h("td", {}, now, " ", badge(x.placement.state)),
					h("td", { class: "would" }, p.node_id ? nodeName(p.node_id) + " " : "", badge(p.state), moved && p.state !== "failed" ? " (moves)" : ""),
					h("td", {}, d ? `${d.kind}: ${d.reason}${d.candidates && d.candidates.some((c) => c.rejected) ? " — rejected: " + d.candidates.filter((c) => c.rejected).map((c) => `${c.node} (${c.rejected})`).join(", ") : ""}` : "unchanged"));
			}))));
}

export { showError };
