// util.js: DOM building without innerHTML (nothing the server sends is
// ever parsed as HTML), time formatting and the state vocabulary.

export function h(tag, attrs, ...children) {
	const el = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (v === undefined || v === null || v === false) continue;
		if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
		else if (k === "class") el.className = v;
		else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the CSP, unlike a style attribute
		else if (k === "dataset") Object.assign(el.dataset, v);
		else if (v === true) el.setAttribute(k, "");
		else el.setAttribute(k, String(v));
	}
	append(el, children);
	return el;
}

function append(el, children) {
	for (const c of children) {
		if (c === undefined || c === null || c === false) continue;
		if (Array.isArray(c)) append(el, c);
		else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
	}
}

// replace swaps el's children, keeping keyboard focus on the element with
// the same data-key if there is one (a live re-render must not throw a
// keyboard user out of the page).
export function replace(el, ...children) {
	const active = document.activeElement;
	const key = active && el.contains(active) ? active.dataset.key : undefined;
	el.replaceChildren();
	append(el, children);
	if (key) {
		const again = el.querySelector(`[data-key="${CSS.escape(key)}"]`);
		if (again) again.focus({ preventScroll: true });
	}
}

export function fmtTime(iso) {
	if (!iso) return "—";
	const d = new Date(iso);
	return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function fmtDateTime(iso) {
	if (!iso) return "—";
	const d = new Date(iso);
	return d.toLocaleDateString([], { year: "numeric", month: "2-digit", day: "2-digit" }) + " " + fmtTime(iso);
}

export function ago(iso, now = Date.now()) {
	if (!iso) return "never";
	const s = (now - new Date(iso).getTime()) / 1000;
	if (s < 1) return "just now";
	if (s < 90) return `${Math.round(s)} s ago`;
	if (s < 5400) return `${Math.round(s / 60)} min ago`;
	if (s < 172800) return `${Math.round(s / 3600)} h ago`;
	return `${Math.round(s / 86400)} d ago`;
}

export function fmtMs(ms) {
	if (ms === undefined || ms === null) return "—";
	if (ms < 1000) return `${Math.round(ms)} ms`;
	return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

// Each state has a colour class, an icon shape and a word, so it reads
// without colour too.
const STATES = {
	up: ["ok", "●", "up"],
	in_service: ["ok", "●", "in service"],
	succeeded: ["ok", "✓", "succeeded"],
	resolved: ["ok", "✓", "resolved"],
	down: ["crit", "✖", "down"],
	failed: ["crit", "✖", "failed"],
	fenced: ["crit", "⊘", "down · fenced"],
	unreachable: ["warn", "▲", "unreachable"],
	maintenance: ["maint", "◆", "maintenance"],
	starting: ["busy", "◐", "starting"],
	stopping: ["busy", "◑", "stopping"],
	running: ["busy", "◐", "running"],
	open: ["busy", "◐", "in progress"],
	pending: ["idle", "○", "pending"],
	out_of_service: ["idle", "○", "out of service"],
	critical: ["crit", "✖", "critical"],
	warning: ["warn", "▲", "warning"],
	info: ["info", "·", "info"],
};

export function badge(state, extra) {
	const [cls, icon, word] = STATES[state] || ["idle", "?", state || "unknown"];
	return h("span", { class: `badge s-${cls}`, "data-state": state }, h("span", { class: "icon", "aria-hidden": "true" }, icon), " ", word + (extra ? " " + extra : ""));
}

export function stateClass(state) { return (STATES[state] || ["idle"])[0]; }
