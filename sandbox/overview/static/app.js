"use strict";
// The overview page: reads /api/overview, listens to /api/events (server-sent events) and
// redraws in place. Read-only; every request carries the token from this page's address.
(function () {
  const token = new URLSearchParams(location.search).get("token") || "";
  const q = "token=" + encodeURIComponent(token);
  let state = null;
  let shownPair = null;
  const previous = {};

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function pairOf(a, b) {
    return state.pairs.find((p) => (p.a === a && p.b === b) || (p.a === b && p.b === a));
  }

  function markOf(p) {
    if (p.textual_conflict) return "X";
    if (p.schema_collision) return p.risk === "high" ? "S" : "!";
    return { high: "X", medium: "!", low: "~", none: "·" }[p.risk];
  }

  function draw() {
    const m = state.main;
    document.getElementById("main").textContent =
      `main ${m.branch} at ${m.commit.slice(0, 12)}` + (m.head ? `, migration head ${m.head}` : "");
    const body = document.querySelector("#workspaces tbody");
    body.replaceChildren();
    for (const w of state.workspaces) {
      const unc = w.uncommitted.changed.length + w.uncommitted.untracked.length;
      const revs = w.revisions.new.join(", ") + (w.revisions.new.length && !w.revisions.on_main_head ? " (not on main's head)" : "");
      const into = w.merges_cleanly === null ? "-" : (w.merges_cleanly ? "clean" : "conflicts: " + w.merge_conflicts.join(", "));
      const sig = JSON.stringify([w.commit, w.ahead, w.behind, unc, w.gate.state, w.diffstat]);
      const row = el("tr", { id: "ws-" + w.name, "data-commit": w.commit || "", "data-gate": w.gate.state,
                             "data-behind": w.behind, "data-ahead": w.ahead, "data-uncommitted": unc },
        el("td", {}, el("a", { class: "ws", onclick: () => review(w.name) }, w.name)),
        el("td", {}, w.brief || ""), el("td", { class: "ahead" }, w.ahead), el("td", { class: "behind" }, w.behind),
        el("td", { class: "uncommitted" }, unc || "-"),
        el("td", {}, `${w.diffstat.files} files +${w.diffstat.added}/-${w.diffstat.removed}`),
        el("td", {}, revs || "-"), el("td", { class: "gate gate-" + w.gate.state }, w.gate.state),
        el("td", {}, into));
      if (previous[w.name] !== undefined && previous[w.name] !== sig) row.classList.add("changed");
      previous[w.name] = sig;
      body.append(row);
    }
    const names = state.workspaces.map((w) => w.name);
    const matrix = document.getElementById("matrix");
    matrix.replaceChildren();
    matrix.append(el("tr", {}, el("th", {}, ""), ...names.map((n) => el("th", {}, n))));
    for (const a of names) {
      const cells = names.map((b) => {
        if (a === b) return el("td", { class: "self" }, "");
        const p = pairOf(a, b);
        if (!p) return el("td", {}, "");
        return el("td", { class: "cell risk-" + p.risk, id: `cell-${a}-${b}`, "data-risk": p.risk,
                          "data-conflict": p.textual_conflict ? "yes" : "no",
                          "data-schema": p.schema_collision ? "yes" : "no",
                          title: p.findings.map((f) => f.message).join("\n"),
                          onclick: () => showPair(a, b) }, markOf(p));
      });
      matrix.append(el("tr", {}, el("th", {}, a), ...cells));
    }
    if (shownPair) showPair(...shownPair);
  }

  function showPair(a, b) {
    shownPair = [a, b];
    const p = pairOf(a, b);
    const box = document.getElementById("findings");
    box.hidden = false;
    box.replaceChildren(el("h3", {}, `${a} – ${b}: ${p ? p.risk : "gone"}`));
    if (!p) return;
    if (!p.findings.length) box.append(el("p", {}, "Nothing: they touch different files and different objects."));
    const list = el("ul", {});
    for (const f of p.findings) list.append(el("li", { class: "risk-" + f.risk, "data-kind": f.kind }, `[${f.kind}] ${f.message}`));
    box.append(list);
  }

  async function review(name) {
    const box = document.getElementById("review");
    box.hidden = false;
    box.replaceChildren(el("h3", {}, `${name}: loading…`));
    const r = await fetch(`api/workspace/${encodeURIComponent(name)}?${q}`);
    const d = await r.json();
    if (!r.ok) { box.replaceChildren(el("h3", {}, `${name}: ${d.error}`)); return; }
    box.replaceChildren(el("h3", {}, `Review ${name} (${d.branch} at ${(d.commit || "").slice(0, 12)})`));
    if (d.brief) box.append(el("p", {}, "Brief: " + d.brief));
    const g = d.gate;
    box.append(el("h4", {}, "Last gate: ", el("span", { class: "gate-" + g.state }, g.state)));
    if (g.report) {
      const ul = el("ul", {});
      for (const f of g.report.findings) {
        const ev = f.evidence ? " — evidence: " + JSON.stringify(f.evidence) : "";
        ul.append(el("li", {}, `${f.severity} ${f.rule}: ${f.message}${ev}`));
      }
      box.append(ul);
    }
    box.append(el("h4", {}, "Merge request"), el("p", {}, d.merge_request ? JSON.stringify(d.merge_request) : "none open"));
    box.append(el("h4", {}, `New revisions (${d.revisions.length})`));
    for (const rv of d.revisions) box.append(el("h5", {}, `${rv.id} (revises ${rv.revises.join(", ")})`), el("pre", {}, rv.sql || rv.note || ""));
    box.append(el("h4", {}, "Diff against main"), el("pre", { class: "diff" }, d.diff || "(no change)"));
  }

  function listen() {
    const live = document.getElementById("live");
    const es = new EventSource(`api/events?${q}`);
    es.addEventListener("overview", (ev) => {
      state = JSON.parse(ev.data);
      draw();
      live.textContent = "live: updated " + new Date().toLocaleTimeString();
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    });
    es.onerror = () => { live.textContent = "connection lost; retrying…"; };
  }

  listen();
})();
