/* xlqa dashboard: what every page shares (API calls with the key, messages, formatting, DOM building). */
"use strict";

const xlqa = (() => {
  const KEY = "xlqa.apiKey";

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  /** JSON API call; the stored API key goes along as a Bearer token. Throws ApiError on 4xx/5xx. */
  async function api(path, {method = "GET", body = undefined} = {}) {
    const headers = {Accept: "application/json"};
    const key = localStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const resp = await fetch(path, {method, headers, body: payload});
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (err) {
      data = {detail: text};
    }
    if (!resp.ok) throw new ApiError(resp.status, describe(resp.status, data));
    return data;
  }

  function detailText(data) {
    const d = data && data.detail;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    return d ? String(d) : "";
  }

  function describe(status, data) {
    const said = detailText(data);
    if (status === 401) return `API key needed or wrong (401): enter the server's XLQA_API_KEY in the field `
      + `at the top right. ${said}`;
    if (status === 403) return `Refused (403): ${said}`;
    return `${status}: ${said || "request failed"}`;
  }

  function flash(message, kind = "error") {
    const box = document.getElementById("flash");
    box.textContent = message;
    box.className = `flash ${kind}`;
    box.hidden = !message;
  }

  /** Element builder: el("td", {class: "num"}, "1.0", child, ...); strings become text nodes. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const num = (x, digits = 1) =>
    (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits));

  function sci(x) {
    if (x === null || x === undefined) return "–";
    if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
    const a = Math.abs(x);
    return a !== 0 && (a < 1e-3 || a >= 1e4) ? Number(x).toExponential(2) : Number(x).toPrecision(3);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const pad = (n) => String(n).padStart(2, "0");
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function badge(status) {
    return el("span", {class: `badge ${String(status || "").split(" ")[0]}`}, status || "–");
  }

  const params = () => new URLSearchParams(window.location.search);

  /** Plotly layout defaults shared by every chart. */
  function layout(extra = {}) {
    return {
      margin: {l: 56, r: 16, t: 36, b: 40},
      font: {family: "system-ui, sans-serif", size: 12},
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
      ...extra,
    };
  }

  const plotConfig = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]};

  document.addEventListener("DOMContentLoaded", () => {
    const field = document.getElementById("api-key");
    if (!field) return;
    field.value = localStorage.getItem(KEY) || "";
    field.addEventListener("change", () => {
      if (field.value) localStorage.setItem(KEY, field.value);
      else localStorage.removeItem(KEY);
    });
  });

  return {api, ApiError, flash, el, num, sci, duration, when, badge, params, layout, plotConfig};
})();
