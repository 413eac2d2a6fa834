/* One run: header, live training curves (polling /events), stop/resume, checkpoints, results per language. */
"use strict";

(() => {
  const {api, el, num, sci, duration, when, badge, flash, layout, plotConfig} = xlqa;
  const runId = document.getElementById("run").dataset.run;
  const base = `/v1/runs/${encodeURIComponent(runId)}`;
  const steps = {step: [], loss: [], lr: [], grad: [], speed: []};
  const marks = []; // nonfinite / rollback / diagnosis / eval / stop events
  let next = -1;
  let detail = null;
  let resultsShown = false;
  const CHARTS = [
    ["chart-loss", "loss", "Training loss", "#1f77b4"],
    ["chart-lr", "lr", "Learning rate", "#2ca02c"],
    ["chart-grad", "grad", "Gradient norm", "#9467bd"],
    ["chart-speed", "speed", "Examples / s", "#ff7f0e"],
  ];

  const MARKED = ["nonfinite", "rollback", "diagnosis", "eval", "stopped", "end", "resume", "best"];
  const finite = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const statusOf = (d) => (d.status && d.status.status) || d.run.status;

  function meta(d) {
    const r = d.run;
    const items = [["Id", r.id], ["Kind", r.kind], ["Model", r.model], ["Started", when(r.created)],
      ["Updated", when(r.updated)], ["Folder", r.dir]];
    if (d.status && d.status.pid) {
      items.push(["Process", `pid ${d.status.pid}${d.status.alive ? "" : " (gone)"}`]);
    }
    if (r.health) items.push(["Health", r.health]);
    document.getElementById("run-meta").replaceChildren(
      ...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]));
    document.getElementById("config").textContent =
      JSON.stringify({config: r.config, environment: r.environment}, null, 2);
  }

  function header(d) {
    const status = statusOf(d);
    document.getElementById("run-name").textContent = d.run.name || d.run.id;
    document.getElementById("run-status").replaceWith(Object.assign(badge(status), {id: "run-status"}));
    const train = d.run.kind === "train";
    document.getElementById("actions").hidden = !train;
    const alive = d.status ? d.status.alive : status === "running";
    document.getElementById("stop").disabled = !(status === "running" && alive);
    document.getElementById("resume").disabled = !(train && ["stopped", "failed", "dead"].includes(status));
    meta(d);
  }

  function progress(d) {
    const s = d.status || {};
    const step = s.step ?? d.run.step ?? 0;
    const total = s.total_steps ?? d.run.total_steps;
    const frac = total ? Math.min(1, step / total) : 0;
    document.getElementById("bar").style.width = `${(100 * frac).toFixed(1)}%`;
    const live = statusOf(d) === "running" && s.eta !== null && s.eta !== undefined;
    const [low, high] = Array.isArray(s.eta_range) ? s.eta_range : [null, null];
    const range = low !== null && low !== undefined && high !== null && high !== undefined
      ? ` (${duration(low)} – ${duration(high)})` : "";
    const eta = live ? ` · ETA ${duration(s.eta)}${range}` : "";
    const epoch = s.epoch !== null && s.epoch !== undefined ? ` · epoch ${num(s.epoch, 2)}` : "";
    const speed = s.examples_per_s ? ` · ${num(s.examples_per_s, 1)} examples/s` : "";
    document.getElementById("progress-text").textContent =
      `step ${step}${total ? ` / ${total} (${(100 * frac).toFixed(0)}%)` : ""}${epoch}${speed}${eta}`;
  }

  function checkpoints(list) {
    const body = document.querySelector("#checkpoints tbody");
    const sorted = [...(list || [])].sort((a, b) => (a.step ?? -1) - (b.step ?? -1));
    const rows = sorted.map((c) => el("tr", {},
      el("td", {class: "num"}, c.step ?? "–"), el("td", {class: "path"}, c.path),
      el("td", {}, c.best ? "best" : "")));
    const none = el("tr", {}, el("td", {colspan: 3, class: "empty"}, "none yet"));
    body.replaceChildren(...(rows.length ? rows : [none]));
  }

  function addEvents(events) {
    for (const e of events) {
      if (e.event === "step") {
        steps.step.push(e.step);
        steps.loss.push(finite(e.loss));
        steps.lr.push(finite(e.lr));
        steps.grad.push(finite(e.grad_norm));
        steps.speed.push(finite(e.examples_per_s));
      } else if (MARKED.includes(e.event)) {
        marks.push(e);
      }
    }
  }

  function shapes() {
    const out = [];
    const notes = [];
    for (const m of marks) {
      if (!["nonfinite", "rollback"].includes(m.event) || m.step === undefined) continue;
      const color = m.event === "nonfinite" ? "#d62728" : "#ff7f0e";
      out.push({type: "line", x0: m.step, x1: m.step, y0: 0, y1: 1, xref: "x", yref: "paper",
        line: {color, width: 1.5, dash: m.event === "rollback" ? "dash" : "dot"}});
      const text = m.event === "nonfinite" ? "NaN" : "rollback";
      notes.push({x: m.step, y: 1, xref: "x", yref: "paper", text,
        showarrow: false, font: {color, size: 10}, yanchor: "bottom"});
    }
    return {shapes: out, annotations: notes};
  }

  function drawCharts() {
    const marked = shapes();
    for (const [id, key, title, color] of CHARTS) {
      // new arrays each time: Plotly.react redraws only what it sees change
      const trace = {x: steps.step.slice(), y: steps[key].slice(), mode: steps.step.length > 60 ? "lines" : "lines+markers",
        line: {color, width: 2}, marker: {size: 4}, name: title, connectgaps: false};
      const extra = {title: {text: title, font: {size: 14}}, xaxis: {title: {text: "step"}}, height: 260,
        datarevision: steps.step.length,
        showlegend: false, ...(key === "loss" ? marked : {})};
      extra.yaxis = {automargin: true, exponentformat: "e"};
      Plotly.react(id, [trace], layout(extra), plotConfig);
    }
    const body = document.querySelector("#notable tbody");
    const rows = marks.slice(-50).reverse().map((m) => el("tr", {class: `ev-${m.event}`},
      el("td", {class: "num"}, m.step ?? m.steps ?? "–"), el("td", {}, m.event),
      el("td", {class: "details"}, summary(m))));
    const none = el("tr", {}, el("td", {colspan: 3, class: "empty"}, "none"));
    body.replaceChildren(...(rows.length ? rows : [none]));
  }

  function summary(m) {
    const skip = new Set(["event", "time", "elapsed", "step", "seq"]);
    return Object.entries(m).filter(([k, v]) => !skip.has(k) && typeof v !== "object")
      .map(([k, v]) => `${k}=${typeof v === "number" ? sci(v) : v}`).join(" ").slice(0, 160);
  }

  async function pollEvents() {
    const data = await api(`${base}/events?after=${next}`);
    if (data.events.length) {
      addEvents(data.events);
      drawCharts();
    }
    next = data.next ?? next;
  }

  // live runs: events pushed by the server (SSE) as they are written; polling /events is the fallback
  const TYPES = ["start", "step", "checkpoint", ...MARKED];
  let stream = null;
  let redraw = null;

  function follow() {
    if (stream || !window.EventSource) return;
    stream = new EventSource(`${base}/stream?after=${next}`);
    const onEvent = (msg) => {
      const e = JSON.parse(msg.data);
      if (typeof e.seq !== "number" || e.seq <= next) return;
      next = e.seq;
      addEvents([e]);
      redraw ||= setTimeout(() => { redraw = null; drawCharts(); }, 250); // one redraw per burst
    };
    for (const t of TYPES) stream.addEventListener(t, onEvent);
    const close = () => {
      if (stream) stream.close();
      stream = null;
    };
    stream.addEventListener("status", close); // the run ended; the page's next refresh shows how
    stream.onerror = close; // the next refresh polls and opens a new stream after the last event seen
  }

  function resultsTable(data) {
    const body = document.querySelector("#results-table tbody");
    const ci = (c) => (c ? `${num(c[0])} – ${num(c[1])}` : "–");
    body.replaceChildren(...data.datasets.map((d) => el("tr", {"data-dataset": d.name},
      el("td", {}, d.name), el("td", {}, d.language ?? "–"), el("td", {}, d.rules ?? "–"),
      el("td", {class: "num"}, d.n_questions ?? "–"), el("td", {class: "num em"}, num(d.em)),
      el("td", {class: "num f1"}, num(d.f1)), el("td", {class: "num"}, ci(d.ci95 && d.ci95.f1)),
      el("td", {class: "num"}, num(d.ext_em)), el("td", {class: "num"}, num(d.ext_f1)),
      el("td", {class: `num ${d.gap_f1 > 0 ? "neg" : ""}`}, d.gap_f1 === null || d.gap_f1 === undefined ? "–"
        : `${d.gap_f1 > 0 ? "+" : ""}${num(d.gap_f1)}`),
      el("td", {}, d.predictions_url ? el("a", {href: d.predictions_url}, "predictions") : "–"))));
    document.getElementById("averages").textContent =
      `Average over ${data.datasets.length} datasets: EM ${num(data.average_em)}, F1 ${num(data.average_f1)}`;
  }

  function resultsChart(data) {
    const names = data.datasets.map((d) => (d.language ? `${d.name} (${d.language})` : d.name));
    const err = (d) => (d.ci95 && d.ci95.f1 ? [d.ci95.f1[1] - d.f1, d.f1 - d.ci95.f1[0]] : [0, 0]);
    const official = {type: "bar", name: "F1 (official)", x: names, y: data.datasets.map((d) => d.f1),
      marker: {color: "#1f77b4"}, error_y: {type: "data", symmetric: false,
        array: data.datasets.map((d) => err(d)[0]), arrayminus: data.datasets.map((d) => err(d)[1]),
        color: "#333", thickness: 1.2, width: 4}};
    const traces = [official];
    if (data.datasets.some((d) => d.ext_f1 !== null && d.ext_f1 !== undefined)) {
      traces.push({type: "bar", name: "F1 (xlqa-ext)", x: names, y: data.datasets.map((d) => d.ext_f1),
        marker: {color: "#aec7e8"}});
    }
    Plotly.react("chart-results", traces, layout({
      title: {text: "F1 per dataset with 95% CI", font: {size: 14}}, barmode: "group",
      yaxis: {title: {text: "F1"}, range: [0, 100]}, height: 360, legend: {orientation: "h"}}),
    plotConfig);
  }

  async function showResults() {
    let data;
    try {
      data = await api(`${base}/results`);
    } catch (err) {
      if (err.status === 404) return false;
      throw err;
    }
    if (!data.datasets || !data.datasets.length) return false;
    document.getElementById("results").hidden = false;
    resultsTable(data);
    resultsChart(data);
    return true;
  }

  async function refresh() {
    detail = await api(base);
    header(detail);
    const train = detail.run.kind === "train";
    document.getElementById("training").hidden = !train;
    if (train) {
      progress(detail);
      checkpoints(detail.checkpoints);
      if (!stream) await pollEvents();
    }
    const running = statusOf(detail) === "running";
    if (train && running) follow();
    document.getElementById("waiting").hidden = !(running && detail.run.kind === "eval");
    // only runs with an evaluation have results (asking otherwise is a 404, which the console reports)
    if (!resultsShown && (detail.evaluations || []).length) resultsShown = await showResults();
    return running;
  }

  async function loop() {
    let running = false;
    try {
      running = await refresh();
      if (!document.getElementById("flash").classList.contains("action")) flash("");
    } catch (err) {
      flash(`Could not read the run: ${err.message}`);
      running = true; // try again
    }
    if (running) setTimeout(loop, document.hidden ? 5000 : 1500);
    document.getElementById("run").dataset.state = running ? "running" : "done";
  }

  async function act(what) {
    const msg = document.getElementById("action-msg");
    msg.textContent = what === "stop" ? "Asking the run to stop…" : "Resuming…";
    try {
      const data = await api(`${base}/${what}`, {method: "POST"});
      const stopped = data.run && data.run.status === "stopped";
      if (what === "resume") msg.textContent = `Resumed (pid ${data.pid}).`;
      else if (stopped) msg.textContent = `Stopped at step ${data.run.step ?? "?"}; a checkpoint was saved.`;
      else msg.textContent = "Stop requested: the run finishes its step, saves a checkpoint and stops.";
      flash("");
      if (what === "resume") loop();
    } catch (err) {
      msg.textContent = "";
      flash(`Could not ${what} the run: ${err.message}`, "error action");
    }
  }

  document.getElementById("stop").addEventListener("click", () => act("stop"));
  document.getElementById("resume").addEventListener("click", () => act("resume"));
  loop();
})();
