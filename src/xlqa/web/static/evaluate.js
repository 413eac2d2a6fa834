/* Start an evaluation: a checkpoint (or any model) on benchmarks and/or files -> POST /v1/jobs/evaluate. */
"use strict";

(() => {
  const {api, el, flash} = xlqa;

  async function checkpoints() {
    const data = await api("/v1/checkpoints");
    const select = document.getElementById("checkpoint");
    const opts = data.checkpoints.map((c) => el("option", {value: c.path},
      `${c.run_name || c.run} · step ${c.step ?? "?"}${c.best ? " · best" : ""}`));
    const first = opts.length ? "— choose a checkpoint —" : "no checkpoints";
    select.replaceChildren(el("option", {value: ""}, first),
      ...opts);
  }

  async function benchmarks() {
    const data = await api("/v1/benchmarks");
    const families = {};
    for (const b of data.benchmarks) (families[b.family || "other"] ||= []).push(b);
    const box = document.getElementById("benchmarks");
    // one folding group per family (MLQA alone has 98 language pairs); small families start open
    box.replaceChildren(...Object.entries(families).map(([family, list]) => {
      const all = el("input", {type: "checkbox", "aria-label": `all of ${family}`, onchange: (e) => {
        for (const b of group.querySelectorAll("input[name=benchmark]")) b.checked = e.target.checked;
      }});
      const group = el("details", {class: "family", open: list.length <= 16},
        el("summary", {}, el("strong", {}, family), ` (${list.length}) `,
          el("label", {class: "all"}, all, " all")),
        el("div", {class: "grid"}, ...list.map((b) => el("label",
          {class: "choice", title: (b.languages || []).join(", ")},
          el("input", {type: "checkbox", name: "benchmark", value: b.name}), ` ${b.name}`))));
      return group;
    }));
  }

  async function start() {
    const model = document.getElementById("model-path").value.trim()
      || document.getElementById("checkpoint").value;
    const benchmarks = [...document.querySelectorAll("input[name=benchmark]:checked")].map((b) => b.value);
    const data = document.getElementById("data-files").value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (!model) return flash("Choose a checkpoint or give a model.");
    if (!benchmarks.length && !data.length) {
      return flash("Choose at least one benchmark or give a data file.");
    }
    const body = {model, benchmarks, data};
    const name = document.getElementById("run-name").value.trim();
    const max = document.getElementById("max-examples").value;
    if (name) body.name = name;
    if (max) body.max_examples = Number(max);
    const msg = document.getElementById("start-msg");
    msg.textContent = "Starting…";
    document.getElementById("start").disabled = true;
    try {
      const job = await api("/v1/jobs/evaluate", {method: "POST", body});
      msg.textContent = `Started run ${job.run.id}; opening it…`;
      window.location.href = `/runs/${encodeURIComponent(job.run.id)}`;
    } catch (err) {
      msg.textContent = "";
      flash(`Could not start the evaluation: ${err.message}`);
    } finally {
      document.getElementById("start").disabled = false;
    }
  }

  document.getElementById("eval-form").addEventListener("submit", start);
  checkpoints().catch((err) => flash(`Could not list the checkpoints: ${err.message}`));
  benchmarks().catch((err) => flash(`Could not list the benchmarks: ${err.message}`));
})();
