/* Compare runs: model x language F1 heatmap, paired differences to the first run, consistency matrices. */
"use strict";

(() => {
  const {api, el, num, flash, layout, plotConfig, params} = xlqa;
  const chosen = params().getAll("runs");

  async function picker() {
    const data = await api("/v1/runs?limit=200&sort=-created");
    const select = document.getElementById("run-choice");
    const scored = data.runs.filter((r) => (r.best_f1 !== null && r.best_f1 !== undefined)
      || chosen.includes(r.id));
    select.replaceChildren(...scored.map((r) => el("option", {value: r.id, selected: chosen.includes(r.id)
      || chosen.includes(r.name)}, `${r.name || r.id} · ${r.model} · F1 ${num(r.best_f1)}`)));
    document.getElementById("compare-go").addEventListener("click", () => {
      const q = new URLSearchParams();
      for (const o of select.selectedOptions) q.append("runs", o.value);
      window.location.href = `/compare?${q}`;
    });
  }

  function heatmap(data, label) {
    const langs = data.languages;
    const z = data.runs.map((r) => langs.map((l) => (data.f1[r.id] || {})[l] ?? null));
    Plotly.react("chart-heatmap", [{type: "heatmap", z, x: langs, y: data.runs.map(label), zmin: 0, zmax: 100,
      colorscale: "Viridis", colorbar: {title: {text: "F1"}}, text: z.map((row) => row.map((v) => num(v))),
      texttemplate: "%{text}", hovertemplate: "%{y}<br>%{x}: F1 %{z:.1f}<extra></extra>"}],
    layout({height: 110 + 50 * data.runs.length, margin: {l: 16, r: 16, t: 16, b: 40},
      yaxis: {autorange: "reversed", automargin: true}}),
    plotConfig);
  }

  function paired(data, label, byId) {
    const first = data.runs[0];
    document.getElementById("baseline").textContent = first ? label(first) : "";
    const f1 = (run, lang) => (data.f1[run] || {})[lang];
    const body = document.querySelector("#paired tbody");
    const rows = (data.paired || []).map((p) => {
      const a = typeof p.a === "number" ? p.a : f1(p.a ?? first.id, p.language);
      const b = typeof p.b === "number" ? p.b : f1(p.b, p.language);
      const other = typeof p.b === "string" ? p.b : p.run;
      return el("tr", {class: p.significant ? "significant" : ""},
        el("td", {}, p.language), el("td", {}, other && byId[other] ? label(byId[other]) : other ?? "–"),
        el("td", {class: "num"}, num(a)), el("td", {class: "num"}, num(b)),
        el("td", {class: `num ${p.diff < 0 ? "neg" : "pos"}`}, `${p.diff > 0 ? "+" : ""}${num(p.diff)}`),
        el("td", {class: "num"}, p.ci95 ? `${num(p.ci95[0])} – ${num(p.ci95[1])}` : "–"),
        el("td", {class: "num"}, num(p.p, 4)), el("td", {class: "num"}, num(p.p_holm, 4)),
        el("td", {}, p.significant ? "yes" : "no"));
    });
    body.replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", {colspan: 9, class: "empty"}, "Choose at least two runs with results."))]));
  }

  function consistency(data, label, byId) {
    const box = document.getElementById("consistency");
    const entries = Object.entries(data.consistency || {});
    // every box in the grid first, so that each chart is drawn at its final width
    const divs = entries.map(([runId]) => el("div", {class: "chart", id: `consistency-${runId}`}));
    box.replaceChildren(...divs);
    for (const [i, [runId, c]] of entries.entries()) {
      Plotly.newPlot(divs[i], [{type: "heatmap", z: c.matrix, x: c.languages, y: c.languages,
        zmin: 0, zmax: 1, colorscale: [[0, "#f7fbff"], [0.5, "#9ecae1"], [1, "#08519c"]],
        text: c.matrix.map((r) => r.map((v) => num(v, 2))), texttemplate: "%{text}",
        hovertemplate: "%{y} → %{x}: %{z:.2f}<extra></extra>"}],
      layout({title: {text: byId[runId] ? label(byId[runId]) : runId, font: {size: 13}}, height: 340,
        yaxis: {autorange: "reversed"}, xaxis: {side: "bottom"}}), plotConfig);
    }
  }

  async function compare() {
    if (chosen.length < 1) return;
    const q = new URLSearchParams();
    for (const r of chosen) q.append("runs", r);
    const data = await api(`/v1/compare?${q}`);
    const byId = Object.fromEntries(data.runs.map((r) => [r.id, r]));
    const label = (r) => `${r.name || r.id} (${r.model})`;
    document.getElementById("comparison").hidden = false;
    heatmap(data, label);
    paired(data, label, byId);
    consistency(data, label, byId);
    const notes = document.getElementById("notes");
    notes.replaceChildren(...(data.notes || []).map((n) => el("li", {}, n)));
    notes.hidden = !(data.notes || []).length;
    document.getElementById("comparison").dataset.loaded = "true";
  }

  picker().catch((err) => flash(`Could not list the runs: ${err.message}`));
  compare().catch((err) => flash(`Could not compare the runs: ${err.message}`));
})();
