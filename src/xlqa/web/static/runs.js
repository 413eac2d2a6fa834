/* Runs page: one page of GET /v1/runs at a time (sorting, filtering and paging done by the server). */
"use strict";

(() => {
  const {api, el, num, duration, when, badge, flash} = xlqa;
  const form = document.getElementById("filters");
  const body = document.querySelector("#runs tbody");
  const state = {sort: "-created", offset: 0, total: 0, selected: new Set()};
  let pending = 0;

  function query() {
    const q = new URLSearchParams({sort: state.sort, offset: state.offset, limit: form.limit.value});
    for (const name of ["kind", "status", "q"]) if (form[name].value) q.set(name, form[name].value);
    return q;
  }

  function progress(r) {
    if (r.kind !== "train") return "–";
    const step = r.total_steps ? `${r.step ?? 0}/${r.total_steps}` : `${r.step ?? "–"}`;
    const epochs = r.epochs ? ` · ep ${num(r.epoch, 1)}/${r.epochs}` : "";
    return step + epochs;
  }

  function row(r) {
    const box = el("input", {type: "checkbox", "aria-label": `select ${r.name || r.id}`,
      checked: state.selected.has(r.id), onchange: (e) => toggle(r.id, e.target.checked)});
    return el("tr", {"data-run": r.id},
      el("td", {class: "check"}, box),
      el("td", {}, el("a", {href: `/runs/${encodeURIComponent(r.id)}`, title: r.id}, r.name || r.id)),
      el("td", {}, r.kind),
      el("td", {class: "model", title: r.model}, r.model),
      el("td", {}, badge(r.status)),
      el("td", {class: "num"}, progress(r)),
      el("td", {class: "num"}, r.status === "running" ? duration(r.eta) : "–"),
      el("td", {class: "num"}, num(r.best_f1)),
      el("td", {}, el("span", {class: `health ${r.health === "ok" ? "ok" : "warn"}`}, r.health || "–")),
      el("td", {class: "num", title: r.created}, when(r.created)));
  }

  function toggle(id, on) {
    if (on) state.selected.add(id);
    else state.selected.delete(id);
    document.getElementById("compare-selected").disabled = state.selected.size < 2;
  }

  async function load() {
    const mine = ++pending;
    const q = query();
    history.replaceState(null, "", `/?${q}`);
    try {
      const data = await api(`/v1/runs?${q}`);
      if (mine !== pending) return; // a newer request is on its way
      state.total = data.total;
      body.replaceChildren(...data.runs.map(row));
      if (!data.runs.length) {
        body.append(el("tr", {}, el("td", {colspan: 10, class: "empty"}, "No runs match.")));
      }
      const last = data.offset + data.runs.length;
      document.getElementById("range").textContent =
        data.total ? `${data.offset + 1}–${last} of ${data.total}` : "0 runs";
      document.getElementById("prev").disabled = data.offset === 0;
      document.getElementById("next").disabled = last >= data.total;
      for (const th of document.querySelectorAll("th[data-sort]")) {
        const key = th.dataset.sort;
        th.classList.toggle("asc", state.sort === key);
        th.classList.toggle("desc", state.sort === `-${key}`);
      }
      body.dataset.loaded = "true";
      flash("");
    } catch (err) {
      flash(`Could not list the runs: ${err.message}`);
    }
  }

  function fromUrl() {
    const p = xlqa.params();
    for (const name of ["kind", "status", "q", "limit"]) if (p.get(name)) form[name].value = p.get(name);
    state.sort = p.get("sort") || state.sort;
    state.offset = Number(p.get("offset") || 0);
  }

  let typing = null;
  form.addEventListener("input", (e) => {
    state.offset = 0;
    clearTimeout(typing);
    typing = setTimeout(load, e.target.name === "q" ? 250 : 0);
  });
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = state.sort === key ? `-${key}` : state.sort === `-${key}` ? key : `-${key}`;
      state.offset = 0;
      load();
    });
  }
  document.getElementById("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - Number(form.limit.value));
    load();
  });
  document.getElementById("next").addEventListener("click", () => {
    state.offset += Number(form.limit.value);
    load();
  });
  document.getElementById("compare-selected").addEventListener("click", () => {
    const q = new URLSearchParams();
    for (const id of state.selected) q.append("runs", id);
    window.location.href = `/compare?${q}`;
  });

  fromUrl();
  load();
  // running runs move on: refresh the visible page now and then (not while the tab is hidden)
  setInterval(() => {
    if (!document.hidden && body.querySelector(".badge.running")) load();
  }, 5000);
})();
