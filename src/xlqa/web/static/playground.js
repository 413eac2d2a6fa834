/* Playground: ask a loaded model; the answer is highlighted at the API's character offsets, not by search. */
"use strict";

(() => {
  const {api, el, num, sci, flash} = xlqa;
  const SAMPLES = {
    English: ["Where was Marie Curie born?",
      "Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891 and studied physics at the "
      + "Sorbonne."],
    "العربية": ["أين ولدت ماري كوري؟",
      "ولدت ماري كوري في وارسو عام 1867. انتقلت إلى باريس عام 1891 ودرست الفيزياء في جامعة السوربون."],
    "中文": ["玛丽·居里出生在哪里？", "玛丽·居里于1867年出生在华沙。她在1891年搬到巴黎，并在索邦大学学习物理。"],
    "ไทย": ["มารี กูรี เกิดที่ไหน",
      "มารี กูรี เกิดที่กรุงวอร์ซอในปี 1867 เธอย้ายไปปารีสในปี 1891 และศึกษาฟิสิกส์ที่ซอร์บอนน์"],
    "हिन्दी": ["मैरी क्यूरी का जन्म कहाँ हुआ था?",
      "मैरी क्यूरी का जन्म 1867 में वारसॉ में हुआ था। वे 1891 में पेरिस चली गईं और सोरबोन में भौतिकी पढ़ी।"],
  };
  let asked = null; // the context the shown answers point into

  /** Show `context` with code points [start, end) marked: three text nodes / a <mark>, built from offsets. */
  function highlight(context, start, end) {
    const box = document.getElementById("highlight");
    const cps = Array.from(context); // code points, as Python indexes strings (JS indexes UTF-16 units)
    if (start === null || start === undefined || start < 0 || end <= start) {
      box.replaceChildren(document.createTextNode(context));
      return;
    }
    box.replaceChildren(document.createTextNode(cps.slice(0, start).join("")),
      el("mark", {}, cps.slice(start, end).join("")), document.createTextNode(cps.slice(end).join("")));
  }

  function show(result) {
    const answers = result.answers || [];
    const best = answers[0];
    document.getElementById("answer").hidden = false;
    document.getElementById("answer-text").textContent = best && best.text ? best.text : "(no answer)";
    document.getElementById("answer-score").textContent = best
      ? `score ${sci(best.score)} · probability ${num(best.probability, 3)} · ${result.model}` : "";
    highlight(asked, best ? best.start : -1, best ? best.end : -1);
    const rows = answers.map((a, i) => {
      const tr = el("tr", {class: i === 0 ? "chosen" : "", tabindex: 0,
        title: "show this answer in the context"},
        el("td", {class: "num"}, i + 1), el("td", {dir: "auto"}, a.text || "(no answer)"),
        el("td", {class: "num"}, sci(a.score)), el("td", {class: "num"}, num(a.probability, 3)),
        el("td", {class: "num"}, a.start), el("td", {class: "num"}, a.end));
      tr.addEventListener("click", () => {
        for (const r of tr.parentNode.children) r.classList.remove("chosen");
        tr.classList.add("chosen");
        highlight(asked, a.start, a.end);
      });
      return tr;
    });
    document.querySelector("#nbest tbody").replaceChildren(...rows);
  }

  async function ask() {
    const question = document.getElementById("question").value.trim();
    const context = document.getElementById("context").value;
    if (!question || !context.trim()) return flash("Type a question and a context.");
    const body = {question, context, top_k: Number(document.getElementById("top-k").value) || 1,
      max_answer_length: Number(document.getElementById("max-len").value) || 30,
      handle_impossible_answer: document.getElementById("impossible").checked};
    const model = document.getElementById("model").value;
    if (model) body.model = model;
    const msg = document.getElementById("ask-msg");
    msg.textContent = "Thinking…";
    const t0 = performance.now();
    try {
      const result = await api("/v1/answer", {method: "POST", body});
      asked = context;
      show(result);
      msg.textContent = `answered in ${Math.round(performance.now() - t0)} ms`;
      flash("");
    } catch (err) {
      msg.textContent = "";
      flash(`No answer: ${err.message}`);
    }
  }

  async function models() {
    const data = await api("/v1/models");
    const select = document.getElementById("model");
    select.replaceChildren(...data.models.map((m) => el("option", {value: m.name, title: m.source || ""},
      `${m.name}${m.task ? ` (${m.task})` : ""}`)));
    if (!data.models.length) {
      const loading = (data.loading || []).length ? ` (loading: ${data.loading.join(", ")})` : "";
      select.replaceChildren(el("option", {value: ""}, `no model loaded${loading}`));
      flash(`The server has no model loaded yet${loading}; start it with xlqa serve --model DIR.`, "info");
    }
  }

  const samples = document.getElementById("samples");
  for (const [name, [q, c]] of Object.entries(SAMPLES)) {
    samples.append(el("button", {type: "button", class: "link", onclick: () => {
      document.getElementById("question").value = q;
      document.getElementById("context").value = c;
    }}, name), " ");
  }
  document.getElementById("ask").addEventListener("submit", ask);
  models().catch((err) => flash(`Could not list the models: ${err.message}`));
})();
