// actions.js: the operator's actions. Each opens a dialog that first says
// what will happen (from the hierarchy's resources, `explain` and
// `simulate`), acts only on an explicit confirmation, and then follows the
// operation(s) the server started until they end.
import * as api from "./api.js";
import { h, replace, badge, fmtMs } from "./util.js";
import { S, cpath, nodeName, nodeState, refresh, showError } from "./app.js";

// startOrder lists a hierarchy's resources children first (dependencies
// before what depends on them), as the agent brings them in service.
export function startOrder(resources) {
	const byName = new Map(resources.map((r) => [r.name, r]));
	const out = [];
	const seen = new Set();
	const visit = (r) => {
		if (seen.has(r.name)) return;
		seen.add(r.name);
		for (const d of r.depends_on || []) if (byName.has(d)) visit(byName.get(d));
		out.push(r.name);
	};
	resources.forEach(visit);
	return out;
}

// dialog opens a modal with a plan (filled in by plan(), which may be
// slow) and a confirm button running act(progress) on confirmation.
function dialog({ title, confirm, danger, plan, act, form }) {
	const body = h("div", { class: "dlg-body" });
	const planBox = h("div", { class: "plan", id: "plan", "aria-live": "polite" }, h("p", { class: "muted" }, "Working out what will happen…"));
	const err = h("p", { class: "error", role: "alert", hidden: true, id: "dlg-error" });
	const progress = h("div", { id: "progress", "aria-live": "polite" });
	const ok = h("button", { type: "button", class: danger ? "danger" : "primary", id: "confirm", disabled: true }, confirm);
	const cancel = h("button", { type: "button", id: "cancel" }, "Cancel");
	const dlg = h("dialog", { class: "dlg", "aria-labelledby": "dlg-title" },
		h("h2", { id: "dlg-title" }, title), body, h("div", { class: "buttons" }, cancel, ok));
	let stopped = false;
	cancel.addEventListener("click", () => dlg.close());
	dlg.addEventListener("close", () => { stopped = true; dlg.remove(); });
	const replan = async () => {
		ok.disabled = true;
		err.hidden = true;
		replace(planBox, h("p", { class: "muted" }, "Working out what will happen…"));
		try {
			replace(planBox, await plan());
			ok.disabled = false;
		} catch (e) {
			err.textContent = e instanceof api.ApiError ? e.text : String(e);
			err.hidden = false;
		}
	};
	ok.addEventListener("click", async () => {
		ok.disabled = true;
		err.hidden = true;
		if (form) form.querySelectorAll("select,input").forEach((x) => { x.disabled = true; });
		try {
			await act(progress, () => stopped);
			cancel.textContent = "Close";
			ok.hidden = true;
		} catch (e) {
			err.textContent = e instanceof api.ApiError ? e.text : String(e);
			err.hidden = false;
			cancel.textContent = "Close";
			ok.hidden = true;
		}
		S.gen++;
		refresh(false);
	});
	replace(body, form || null, h("h3", {}, "What will happen"), planBox, err, progress);
	document.body.append(dlg);
	dlg.showModal();
	replan();
	return { replan, dlg, ok };
}

// follow polls operations until each ended, rendering them into box.
async function followOps(box, ops, isStopped, label) {
	const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
	let cur = ops;
	for (;;) {
		replace(box, label ? label(cur) : null, cur.map(opView));
		if (cur.every((o) => o.state === "succeeded" || o.state === "failed") || isStopped()) return cur;
		await sleep(300);
		cur = await Promise.all(cur.map((o) => (o.state === "succeeded" || o.state === "failed") ? o : api.get(`/v1/operations/${o.id}`, "Following the operation")));
	}
}

function opView(o) {
	const what = o.kind === "switchover" ? `Switchover of ${hname(o.hierarchy_id)} ${nodeName(o.node_id)} → ${nodeName(o.target_node_id)}` :
		o.kind === "in_service" ? `Bring ${hname(o.hierarchy_id)} in service on ${nodeName(o.node_id)}` :
			`Take ${hname(o.hierarchy_id)} out of service on ${nodeName(o.node_id)}`;
	return h("div", { class: "op", "data-op-state": o.state },
		h("p", {}, badge(o.state), " ", what, ` · epoch ${o.epoch}`),
		o.detail ? h("p", { class: o.state === "failed" ? "error" : "muted" }, o.detail) : null,
		o.steps && o.steps.length ? h("table", { class: "steps" },
			h("thead", {}, h("tr", {}, ["Resource", "Step", "Result", "Took"].map((t) => h("th", { scope: "col" }, t)))),
			h("tbody", {}, o.steps.map((s) => h("tr", {},
				h("td", {}, s.resource), h("td", {}, s.action.replace("_", " ")),
				h("td", {}, s.ok ? badge("succeeded") : badge("failed", s.detail ? "— " + s.detail : "")),
				h("td", { class: "num" }, fmtMs(s.duration_ms)))))) :
			h("p", { class: "muted" }, o.state === "pending" ? "Queued for the agent…" : o.state === "running" ? "The agent is working…" : ""));
}

const hname = (id) => (S.hiers.find((x) => x.id === id) || {}).name || id;

function nodeOptions(x, exclude, explain) {
	const rejected = new Map((explain ? explain.next_candidates : []).filter((c) => c.rejected).map((c) => [c.node_id, c.rejected]));
	return [...x.priorities].sort((a, b) => a.priority - b.priority).filter((p) => p.node_id !== exclude).map((p) => {
		const n = S.nodes.find((y) => y.id === p.node_id);
		const why = rejected.get(p.node_id) || (n && nodeState(n) !== "up" ? nodeState(n) : "");
		return { id: p.node_id, priority: p.priority, why, label: `${nodeName(p.node_id)} (priority ${p.priority})${why ? " — cannot: " + why : ""}` };
	});
}

export async function switchoverDialog(x) {
	const from = x.placement.node_id;
	let explain = null;
	try { explain = await api.get(cpath(`/hierarchies/${x.id}/explain`), "Explain"); } catch (e) { showError(e); }
	const opts = nodeOptions(x, from, explain);
	const best = opts.find((o) => !o.why);
	const select = h("select", { id: "target" },
		opts.map((o) => h("option", { value: o.id, selected: best && o.id === best.id }, o.label)));
	const form = h("div", { class: "field" }, h("label", { for: "target" }, "Switch over to"), select);
	const order = startOrder(x.resources);
	const d = dialog({
		title: `Switch ${x.name} over`, confirm: "Switch over", form,
		plan: async () => {
			const to = select.value;
			const opt = opts.find((o) => o.id === to);
			const sim = await api.request("POST", cpath("/simulate"), { body: { node_failures: [from] }, what: "Simulate" });
			const engine = sim.placements.find((p) => p.hierarchy_id === x.id) || {};
			const others = S.hiers.filter((y) => y.id !== x.id && y.placement.node_id === from && y.placement.state === "in_service").map((y) => y.name);
			return h("div", {},
				h("ol", {},
					h("li", {}, `Take ${x.name} out of service on ${nodeName(from)}: stop ${[...order].reverse().join(", ")}.`),
					h("li", {}, `Bring it in service on ${nodeName(to)}: start ${order.join(", ")}.`),
					h("li", {}, `${x.name} is unavailable from the stop until the last start; each step is a signed command with a new epoch (now ${x.placement.epoch}). The move is recorded as a switchover incident.`)),
				opt && opt.why ? h("p", { class: "alert a-crit" }, `${nodeName(to)} cannot take it now: ${opt.why}. The server will refuse.`) : null,
				h("p", { class: "muted", id: "sim-line" }, `For comparison (simulate): if ${nodeName(from)} failed now, the engine would move ${x.name} to ${engine.node_id ? nodeName(engine.node_id) : "nowhere — it would fail"}.`),
				others.length ? h("p", { class: "muted" }, `Not touched: ${others.join(", ")} stay on ${nodeName(from)}.`) : null);
		},
		act: async (box, stopped) => {
			const op = await api.request("POST", cpath(`/hierarchies/${x.id}/switchover`), { body: { node_id: select.value }, idempotencyKey: api.newKey(), what: "Switchover" });
			const [end] = await followOps(box, [op], stopped);
			if (end.state === "failed") throw new Error(`the switchover failed: ${end.detail || "see the steps above"}`);
			box.append(h("p", { class: "done", id: "done" }, `✓ ${x.name} is in service on ${nodeName(select.value)}.`));
		},
	});
	select.addEventListener("change", d.replan);
}

export function serviceDialog(x, dir) {
	const order = startOrder(x.resources);
	if (dir === "out") {
		const on = x.placement.node_id;
		dialog({
			title: `Take ${x.name} out of service`, confirm: "Take out of service", danger: true,
			plan: async () => h("div", {},
				h("ol", {}, h("li", {}, `Stop ${[...order].reverse().join(", ")} on ${nodeName(on)}.`)),
				h("p", { class: "alert a-warn" }, `${x.name} will then run nowhere and will not fail over until someone brings it in service again.`)),
			act: async (box, stopped) => {
				const op = await api.request("POST", cpath(`/hierarchies/${x.id}/out-of-service`), { idempotencyKey: api.newKey(), what: "Out of service" });
				const [end] = await followOps(box, [op], stopped);
				if (end.state === "failed") throw new Error(`taking it out of service failed: ${end.detail || "see the steps"}`);
				box.append(h("p", { class: "done", id: "done" }, `✓ ${x.name} is out of service.`));
			},
		});
		return;
	}
	const opts = nodeOptions(x, "", null);
	const best = opts.find((o) => !o.why);
	const select = h("select", { id: "target" }, opts.map((o) => h("option", { value: o.id, selected: best && o.id === best.id }, o.label)));
	const form = h("div", { class: "field" }, h("label", { for: "target" }, "Bring in service on"), select);
	const d = dialog({
		title: `Bring ${x.name} in service`, confirm: "Bring in service", form,
		plan: async () => {
			const opt = opts.find((o) => o.id === select.value);
			return h("div", {},
				h("ol", {}, h("li", {}, `Start ${order.join(", ")} on ${nodeName(select.value)}, in that order; a failed step rolls back what it started.`)),
				opt && opt.why ? h("p", { class: "alert a-crit" }, `${nodeName(select.value)} cannot take it now: ${opt.why}.`) : null);
		},
		act: async (box, stopped) => {
			const op = await api.request("POST", cpath(`/hierarchies/${x.id}/in-service`), { body: { node_id: select.value }, idempotencyKey: api.newKey(), what: "In service" });
			const [end] = await followOps(box, [op], stopped);
			if (end.state === "failed") throw new Error(`bringing it in service failed: ${end.detail || "see the steps"}`);
			box.append(h("p", { class: "done", id: "done" }, `✓ ${x.name} is in service on ${nodeName(select.value)}.`));
		},
	});
	select.addEventListener("change", d.replan);
}

export function maintenanceDialog(n, on) {
	const here = S.hiers.filter((x) => x.placement.node_id === n.id && x.placement.state === "in_service");
	if (!on) {
		const back = S.hiers.filter((x) => x.switchback === "automatic" && x.priorities.some((p) => p.node_id === n.id) && x.placement.node_id !== n.id);
		dialog({
			title: `End maintenance of ${n.name}`, confirm: "End maintenance",
			plan: async () => h("div", {}, h("ol", {},
				h("li", {}, `${n.name} becomes a candidate for its hierarchies again.`),
				h("li", {}, back.length ? `With automatic switchback, these may move back to it: ${back.map((x) => x.name).join(", ")}.` : "Nothing moves by itself (no hierarchy with automatic switchback prefers it)."))),
			act: async (box) => {
				await api.request("DELETE", cpath(`/nodes/${n.id}/maintenance`), { what: "End maintenance" });
				box.append(h("p", { class: "done", id: "done" }, `✓ ${n.name} is out of maintenance.`));
			},
		});
		return;
	}
	dialog({
		title: `Put ${n.name} in maintenance`, confirm: "Start maintenance", danger: here.length > 0,
		plan: async () => {
			const sim = await api.request("POST", cpath("/simulate"), { body: { node_failures: [n.id] }, what: "Simulate" });
			return h("div", {},
				h("p", {}, `${n.name} will be no candidate for any hierarchy. ${here.length ? "Each hierarchy on it is switched over (drained):" : "Nothing runs on it: nothing moves."}`),
				here.length ? h("ul", { id: "drain-plan" }, here.map((x) => {
					const p = sim.placements.find((y) => y.hierarchy_id === x.id) || {};
					return p.node_id && p.state !== "failed" ? h("li", {}, `${x.name}: ${n.name} → ${nodeName(p.node_id)}`) :
						h("li", { class: "alert a-crit" }, `${x.name}: no other node can take it — it would stop being protected.`);
				})) : null);
		},
		act: async (box, stopped) => {
			const res = await api.request("PUT", cpath(`/nodes/${n.id}/maintenance`), { what: "Start maintenance" });
			const total = res.operations.length;
			const ends = await followOps(box, res.operations, stopped, (ops) => {
				const doneN = ops.filter((o) => o.state === "succeeded" || o.state === "failed").length;
				return h("p", { id: "drain" }, total ? `Drained ${doneN} of ${total}` : "Nothing to drain.",
					total ? h("progress", { max: total, value: doneN }) : null);
			});
			const failed = ends.filter((o) => o.state === "failed");
			if (failed.length) throw new Error(`${failed.length} of ${total} moves failed; see above`);
			box.append(h("p", { class: "done", id: "done" }, `✓ ${n.name} is in maintenance${total ? " and drained" : ""}.`));
		},
	});
}

export function clearMarkDialog(x, mark) {
	dialog({
		title: `Clear the failed mark of ${x.name} on ${nodeName(mark.node_id)}`, confirm: "Clear failed mark",
		plan: async () => h("div", {},
			h("p", {}, `${x.name} failed on ${nodeName(mark.node_id)}: ${mark.reason}.`),
			h("p", {}, `Clearing makes ${nodeName(mark.node_id)} a candidate for ${x.name} again (nothing moves now). Do it once what failed there is fixed.`)),
		act: async (box) => {
			await api.request("DELETE", cpath(`/hierarchies/${x.id}/failed-marks/${mark.node_id}`), { what: "Clear failed mark" });
			box.append(h("p", { class: "done", id: "done" }, `✓ ${nodeName(mark.node_id)} is a candidate for ${x.name} again.`));
		},
	});
}
