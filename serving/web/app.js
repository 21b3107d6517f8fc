// The page's behaviour: calls the HTTP/JSON API of the server that served it (same origin) and
// shows the answers. No framework, no build step: plain DOM.
"use strict";

const TOKEN_KEY = "seq2seq-token";
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(code, status, message) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

// One API call; resolves to the JSON answer or rejects with an ApiError carrying the server's
// {"error": {code, status, message}} (or what went wrong before an answer came).
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "UNREACHABLE", "the server cannot be reached (" + err.message + ")");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(response.status, e.status || response.statusText,
      e.message || "HTTP " + response.status);
  }
  return data;
}

function showError(box, err) {
  box.textContent = "";
  const head = document.createElement("strong");
  head.textContent = err.code ? `${err.code} ${err.status}` : err.status;
  box.append(head, ": " + err.message);
  box.hidden = false;
  if (err.code === 401) $("token-form").hidden = false;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value; // CSSOM: allowed by the page's CSP
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// Runs `work` with the form's button disabled; errors go into `box`.
async function busy(button, box, work) {
  box.hidden = true;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (err) {
    if (!(err instanceof ApiError)) console.error(err);
    showError(box, err instanceof ApiError ? err : new ApiError(0, "ERROR", String(err)));
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// --- models -----------------------------------------------------------------------------------

// "beam_bleu" → "beam BLEU 43.0", "macro_f1" → "macro F1 0.799"
const SCORE_WORDS = { bleu: "BLEU", chrf: "chrF", f1: "F1" };
function fmtScore(name, value) {
  const words = name.split("_").map((w) => SCORE_WORDS[w] || w);
  const digits = /bleu|chrf/.test(name) ? 1 : 3;
  return `${words.join(" ")} ${value.toFixed(digits)}`;
}

const served = {}; // task → the version a request naming none gets, as last seen
const trainedAt = {}; // task → {version: trained_steps}

function renderModels(data) {
  const list = $("model-list");
  list.textContent = "";
  if (!data.models.length) list.append(el("p", {}, "no models are loaded yet"));
  const news = [];
  for (const m of data.models) {
    const task = m.task === "TASK_TRANSLATE" ? "translate" : "classify";
    trainedAt[task] = { ...(trainedAt[task] || {}), [m.version]: Number(m.trained_steps) };
    if (!m.is_default) continue;
    const fresh = served[task] !== Number(m.version);
    if (fresh && served[task] !== undefined) {
      news.push(`${task} v${m.version} is now served` +
        (Number(m.trained_steps) ? ` (trained ${Number(m.trained_steps).toLocaleString("en")} steps)` : ""));
    }
    const scores = Object.entries(m.eval_scores)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => fmtScore(k, v))
      .join(" · ");
    const rows = [
      ["Data", task === "translate"
        ? `${m.dataset} (${m.source_language} → ${m.target_language})`
        : `${m.dataset} (${m.labels.join(", ")})`],
      ["Test", scores || "—"],
    ];
    if (Number(m.trained_steps)) {
      rows.push(["Trained", `${Number(m.trained_steps).toLocaleString("en")} steps` +
        (m.intermediate ? " (an intermediate version: its run is still training)" : "")]);
    }
    if (task === "translate") {
      rows.push(["Defaults", `beam ${m.default_beam_size}, max length ${m.default_max_length}, ` +
        `length penalty ${m.default_length_penalty}`]);
      if (served.translate === undefined) $("beam").value = m.default_beam_size;
      $("translate-langs").textContent = `${m.source_language} → ${m.target_language}`;
    } else {
      $("classify-dataset").textContent = m.dataset;
    }
    served[task] = Number(m.version);
    const dl = el("dl");
    for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, v));
    list.append(el("article", { class: "model", id: "model-" + task },
      el("h3", {}, task + " ", el("span", { class: "version" }, "v" + m.version)), dl));
  }
  const lim = data.limits;
  for (const id of ["source", "review"]) {
    $(id).maxLength = lim.max_text_chars;
    countChars(id);
  }
  $("beam").max = lim.max_beam_size;
  $("nbest").max = Math.min(lim.max_n_best, Number($("beam").value));
  if (Number($("nbest").value) > Number($("nbest").max)) $("nbest").value = $("nbest").max;
  const names = data.models.filter((m) => m.is_default).map((m) =>
    `${m.task === "TASK_TRANSLATE" ? "translate" : "classify"} v${m.version}`);
  if (names.length) setStatus("ok", "ready: " + names.join(", "));
  else setStatus("", "no model yet: the first versions are training (see Learning below)");
  if (news.length) {
    $("news").textContent = news.join("; ") + ".";
    $("news").hidden = false;
  }
}

// "37 / 2,000 characters" under a text box that stops at the server's limit
function countChars(id) {
  const box = $(id);
  const count = $(id + "-count");
  if (!count) return;
  const limit = box.maxLength > 0 ? box.maxLength : null;
  count.textContent = `${fmtInt(box.value.length)}` +
    (limit ? ` / ${fmtInt(limit)} characters` : " characters");
  count.classList.toggle("full", limit !== null && box.value.length >= limit);
}

function setStatus(kind, text) {
  const status = $("status");
  status.className = "status " + kind;
  status.textContent = text;
}

// The served versions are looked at again every few seconds: a version exported by a run
// training behind the server is announced when it loads.
async function loadModels() {
  try {
    renderModels(await api("GET", "v1/models"));
    setTimeout(loadModels, 5000);
  } catch (err) {
    if (err.code === 401) {
      $("token-form").hidden = false;
      setStatus("down", "a token is needed");
    } else if (err.code === 503 || err.code === 0) {
      setStatus("", err.code === 503 ? "loading the models…" : "server unreachable, retrying…");
      setTimeout(loadModels, 2000);
    } else {
      setStatus("down", `${err.code} ${err.status}: ${err.message}`);
    }
  }
}

// --- translation ------------------------------------------------------------------------------

// A byte-fallback piece ("<0xE2>"): a character the vocabulary lacks is spelled as its UTF-8
// bytes, one piece each. The page decodes them: it shows characters, never the pieces' names.
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;
const byteOf = (piece) => {
  const m = BYTE_PIECE.exec(piece);
  return m ? parseInt(m[1], 16) : null;
};

// The text pieces spell: "▁" a space, runs of byte pieces decoded as UTF-8 (bytes that make no
// character are dropped).
function piecesText(pieces) {
  let out = "";
  let bytes = [];
  const flush = () => {
    if (bytes.length) out += new TextDecoder().decode(new Uint8Array(bytes)).replace(/\uFFFD/g, "");
    bytes = [];
  };
  for (const piece of pieces) {
    const b = byteOf(piece);
    if (b !== null) bytes.push(b);
    else {
      flush();
      out += piece.replace(/\u2581/g, " ");
    }
  }
  flush();
  return out;
}

// A label per piece for the heatmap: a byte piece that starts a character shows the
// character, the pieces that continue it "·".
function pieceLabels(pieces) {
  const labels = [...pieces];
  for (let i = 0; i < pieces.length;) {
    const b = byteOf(pieces[i]);
    if (b === null) {
      i += 1;
      continue;
    }
    const size = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    let end = i + 1;
    while (end < i + size && end < pieces.length && byteOf(pieces[end]) !== null) end += 1;
    labels[i] = piecesText(pieces.slice(i, end)) || "·";
    for (let k = i + 1; k < end; k++) labels[k] = "·";
    i = end;
  }
  return labels;
}

// SentencePiece pieces → words: a word starts at a piece beginning with "▁".
function words(pieces) {
  const spans = [];
  pieces.forEach((piece, i) => {
    if (piece === "<eos>") return;
    if (piece.startsWith("\u2581") || !spans.length) spans.push([]);
    spans[spans.length - 1].push(i);
  });
  return spans.map((span) => ({ text: piecesText(span.map((i) => pieces[i])).trim(), span }));
}

function renderAlignment(h) {
  const figure = $("alignment");
  const S = h.source_tokens.length;
  const T = h.target_tokens.length;
  if (!S || !T || h.alignment.length !== S * T) {
    figure.hidden = true;
    return;
  }
  const weight = (t, s) => h.alignment[t * S + s];
  const sourceWords = words(h.source_tokens);
  const targetWords = words(h.target_tokens);

  const sourceBox = $("source-words");
  sourceBox.textContent = "";
  const sourceSpans = sourceWords.map((w) => el("span", { class: "word" }, w.text));
  sourceBox.append(...sourceSpans);

  const table = $("heatmap");
  table.textContent = "";
  const head = el("tr", {}, el("th", {}, ""));
  const sourceLabels = pieceLabels(h.source_tokens);
  const targetLabels = pieceLabels(h.target_tokens);
  sourceLabels.forEach((p) => head.append(el("th", { scope: "col" }, p)));
  table.append(el("thead", {}, head));
  const rows = [];
  const body = el("tbody");
  targetLabels.forEach((piece, t) => {
    const row = el("tr", {}, el("th", { scope: "row" }, piece));
    for (let s = 0; s < S; s++) {
      const w = weight(t, s);
      row.append(el("td", {
        title: `${piece} ← ${sourceLabels[s]}: ${w.toFixed(2)}`,
        style: `background: rgba(var(--heat), ${w.toFixed(3)})`,
      }));
    }
    rows.push(row);
    body.append(row);
  });
  table.append(body);

  const clear = () => {
    sourceSpans.forEach((span) => {
      span.style.backgroundColor = "";
      span.classList.remove("strong");
    });
    rows.forEach((row) => row.classList.remove("active"));
    targetBox.querySelectorAll(".word").forEach((w) => w.classList.remove("active"));
  };
  // A target word's attention on each source word: its pieces' rows summed over the source
  // word's pieces, averaged over the target pieces (so the weights of one word sum to 1).
  const show = (word, node) => {
    clear();
    node.classList.add("active");
    word.span.forEach((t) => rows[t].classList.add("active"));
    sourceWords.forEach((sw, i) => {
      let mass = 0;
      for (const t of word.span) for (const s of sw.span) mass += weight(t, s);
      mass /= word.span.length;
      sourceSpans[i].style.backgroundColor = `rgba(var(--heat), ${mass.toFixed(3)})`;
      sourceSpans[i].classList.toggle("strong", mass > 0.5);
      sourceSpans[i].title = `${(mass * 100).toFixed(0)}% of ${word.text}'s attention`;
    });
  };
  const targetBox = $("target-words");
  targetBox.textContent = "";
  targetWords.forEach((w) => {
    const node = el("span", { class: "word", tabIndex: 0 }, w.text);
    node.addEventListener("mouseenter", () => show(w, node));
    node.addEventListener("focus", () => show(w, node));
    node.addEventListener("mouseleave", clear);
    node.addEventListener("blur", clear);
    targetBox.append(node);
  });
  figure.hidden = false;
}

// How far to trust an answer, in words and colour: the chance that a translation the model
// scores like this one is acceptable (chrF ≥ 50 against a human one; fitted on the validation
// split when the version was exported).
const TRUST = [
  [0.75, "likely right", "good"],
  [0.5, "may be wrong", "fair"],
  [0, "probably wrong", "poor"],
];
function confidenceBadge(p) {
  if (p === undefined || p === null) return null;
  const [, words, kind] = TRUST.find(([least]) => p >= least);
  return el("span", {
    class: "confidence " + kind,
    title: "the chance that a translation the model scores like this is acceptable " +
      "(chrF ≥ 50 against a human translation), fitted on held-out sentences",
  }, `${words} · ${Math.round(p * 100)}% confidence`);
}

// Warnings, each a sentence: "This does not look like Spanish (it looks like English)."
function renderWarnings(node, warnings) {
  node.textContent = "";
  for (const w of warnings || []) {
    const text = w.message.charAt(0).toUpperCase() + w.message.slice(1) + ".";
    node.append(el("li", { class: "warning " + w.code, "data-code": w.code }, text));
  }
  node.hidden = !node.childElementCount;
}

function renderTranslation(data) {
  const answer = data.translations[0];
  const hyps = answer.hypotheses;
  const list = $("hypotheses");
  list.textContent = "";
  const buttons = hyps.map((h, i) => {
    const button = el("button", {
      type: "button",
      "aria-pressed": String(i === 0),
      title: `score ${h.score.toFixed(3)} (log-probability, length-normalised for beam)`,
    }, el("span", { class: "text" }, h.text || "(empty)"));
    if (i === 0) {
      const badge = confidenceBadge(answer.confidence);
      if (badge) button.append(badge);
    }
    button.addEventListener("click", () => {
      buttons.forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      renderAlignment(h);
    });
    list.append(el("li", {}, button));
    return button;
  });
  renderWarnings($("translate-warnings"), answer.warnings);
  // a text translated in parts: each part, with its confidence; its alignment on a click
  const parts = $("sentences");
  parts.textContent = "";
  (answer.sentences || []).forEach((s, i) => {
    const button = el("button", { type: "button", "aria-pressed": String(i === 0) },
      el("span", { class: "part-source" }, s.source),
      el("span", { class: "part-text" }, s.hypothesis.text || "(empty)"));
    const badge = confidenceBadge(s.confidence);
    if (badge) button.append(badge);
    button.addEventListener("click", () => {
      parts.querySelectorAll("button").forEach((b) =>
        b.setAttribute("aria-pressed", String(b === button)));
      renderAlignment(s.hypothesis);
    });
    parts.append(el("li", {}, button));
  });
  $("sentences-block").hidden = !parts.childElementCount;
  $("alignment").hidden = true;
  if (answer.sentences && answer.sentences.length) renderAlignment(answer.sentences[0].hypothesis);
  else if (hyps.length) renderAlignment(hyps[0]);
  answeredBy($("translate-by"), "translate", data.model_version);
  $("translate-result").hidden = false;
}

// "answered by translate v3 (trained 2,000 steps)"
function answeredBy(node, task, version) {
  const steps = (trainedAt[task] || {})[version];
  node.textContent = `answered by ${task} v${version}` +
    (steps ? ` (trained ${steps.toLocaleString("en")} steps)` : "");
}

async function translate(event) {
  event.preventDefault();
  const request = {
    texts: [$("source").value],
    beam_size: Number($("beam").value),
    n_best: Number($("nbest").value),
    return_alignment: $("align").checked,
  };
  await busy($("translate-button"), $("translate-error"), async () => {
    $("translate-result").hidden = true;
    renderTranslation(await api("POST", "v1/translate", request));
  });
}

// --- classification ---------------------------------------------------------------------------

function renderClassification(data) {
  const result = data.results[0];
  $("label").textContent = result.label;
  const bars = $("bars");
  bars.textContent = "";
  const probs = [...result.probabilities].sort((a, b) => b.probability - a.probability);
  for (const p of probs) {
    const pct = (p.probability * 100).toFixed(1) + "%";
    bars.append(el("div", { class: "bar" + (p.label === result.label ? " best" : "") },
      el("span", { class: "name" }, p.label),
      el("div", { class: "track", role: "img", "aria-label": `${p.label} ${pct}` },
        el("div", { class: "fill", style: `width: ${pct}` })),
      el("span", { class: "value" }, pct)));
  }
  renderWarnings($("classify-warnings"), result.warnings);
  answeredBy($("classify-by"), "classify", data.model_version);
  $("classify-result").hidden = false;
}

async function classify(event) {
  event.preventDefault();
  await busy($("classify-button"), $("classify-error"), async () => {
    $("classify-result").hidden = true;
    renderClassification(await api("POST", "v1/classify", { texts: [$("review").value] }));
  });
}

// --- learning: the runs training behind the server ---------------------------------------------

const RUN_TITLES = { translate: "Translator", classify: "Classifier" };
const STATE_WORDS = {
  queued: "waiting for its turn",
  training: "training",
  paused: "paused: it has its first version and goes on after the other run's",
  finished: "finished: the final version is served",
  stopped: "stopped: the next make serve resumes it",
  interrupted: "interrupted: the next make serve resumes it",
  failed: "failed",
};

function fmtDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  const m = Math.round(s / 60);
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

const fmtInt = (n) => Number(n).toLocaleString("en");

// The canvas sized to its laid-out box at the screen's pixel ratio, cleared: its 2D context
// (in CSS pixels), width and height.
function sizedCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 320;
  const height = canvas.clientHeight || 150;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  return [g, width, height];
}

// A small line chart on a canvas: series of [x, y] points, x from 0 to `xMax`.
function drawChart(canvas, series, xMax, yLabel) {
  const [g, width, height] = sizedCanvas(canvas);
  const all = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const left = 44, right = 8, top = 8, bottom = 22;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#5b6472";
  g.strokeStyle = "#d9dee6";
  g.strokeRect(left, top, width - left - right, height - top - bottom);
  g.fillText("step", width - right - 24, height - 6);
  g.fillText("0", left, height - 8);
  g.fillText(fmtInt(xMax), width - right - 64, height - 8);
  if (!all.length) {
    g.fillText("no points yet", left + 10, top + 20);
    return;
  }
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  g.fillText(hi.toFixed(hi < 10 ? 2 : 0), 2, top + 10);
  g.fillText(lo.toFixed(lo < 10 ? 2 : 0), 2, height - bottom);
  const x = (v) => left + (v / Math.max(xMax, 1)) * (width - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (height - top - bottom);
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    g.strokeStyle = s.color;
    g.fillStyle = s.color;
    g.lineWidth = 1.5;
    g.beginPath();
    pts.forEach(([px, py], i) => (i ? g.lineTo(x(px), y(py)) : g.moveTo(x(px), y(py))));
    if (s.line !== false) g.stroke();
    if (s.dots) for (const [px, py] of pts) g.fillRect(x(px) - 2.5, y(py) - 2.5, 5, 5);
  }
  g.fillStyle = "#5b6472";
  g.fillText(yLabel, left + 6, top + 12);
}

// ‖∂L/∂h_t‖ (log10) of one SimpleRNN: time step up, training step across (magma-like ramp).
function drawHeatmap(canvas, steps, columns, xMax) {
  const [g, width, height] = sizedCanvas(canvas);
  const values = columns.flat().filter(Number.isFinite);
  const rows = Math.max(1, ...columns.map((c) => c.length));
  if (!values.length) return;
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) hi = lo + 1;
  const left = 4, right = 4, top = 4, bottom = 4;
  const w = width - left - right, h = height - top - bottom;
  const colour = (v) => {
    const f = (v - lo) / (hi - lo); // 0 dark purple → 1 pale yellow
    const r = Math.round(20 + 230 * Math.min(1, f * 1.4));
    const gr = Math.round(10 + 220 * Math.max(0, f - 0.35) / 0.65);
    const b = Math.round(60 + 100 * Math.sin(Math.PI * Math.min(1, f * 1.2)));
    return `rgb(${r}, ${gr}, ${b})`;
  };
  columns.forEach((column, j) => {
    const x0 = left + (steps[j - 1] !== undefined ? steps[j - 1] : 0) / Math.max(xMax, 1) * w;
    const x1 = left + steps[j] / Math.max(xMax, 1) * w;
    column.forEach((v, t) => {
      if (!Number.isFinite(v)) return;
      g.fillStyle = colour(v);
      g.fillRect(x0, top + h - ((t + 1) / rows) * h, Math.max(1, x1 - x0), h / rows + 0.5);
    });
  });
  canvas.title = `log10 ‖∂L/∂h_t‖ from ${lo.toFixed(1)} (dark) to ${hi.toFixed(1)} (light); ` +
    `t = 1…${rows} up the side`;
}

function scoreText(name, value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "";
  return name === "accuracy" ? `accuracy ${value.toFixed(1)}%` : fmtScore(name.replace("_greedy", ""), value);
}

function renderRun(task, s) {
  const box = el("article", { class: "run", id: "run-" + task });
  const state = STATE_WORDS[s.state] || s.state;
  box.append(el("h3", {}, RUN_TITLES[task] || task, " ",
    el("span", { class: "run-state state-" + s.state }, state)));
  const progress = el("progress", { max: s.total_steps || 1, value: s.step || 0 });
  const facts = [`step ${fmtInt(s.step)} of ${fmtInt(s.total_steps)}`];
  if (s.steps_per_second) facts.push(`${s.steps_per_second.toFixed(1)} steps/s`);
  if (s.state === "training" && s.next_check_step) {
    facts.push(`next validation at step ${fmtInt(s.next_check_step)}` +
      (s.next_check_seconds !== null ? ` in about ${fmtDuration(s.next_check_seconds)}` : ""));
  }
  if (s.message) facts.push(s.message);
  box.append(el("div", { class: "run-progress" }, progress,
    el("span", { class: "run-facts" }, facts.join(" · "))));

  const charts = el("div", { class: "charts" });
  const loss = el("canvas", { class: "chart", role: "img",
    "aria-label": `${RUN_TITLES[task]}: training loss and validation loss by step` });
  const score = el("canvas", { class: "chart", role: "img",
    "aria-label": `${RUN_TITLES[task]}: validation ${s.score_name} by step` });
  charts.append(el("figure", {}, loss, el("figcaption", {}, "loss: training (line), validation (squares)")),
    el("figure", {}, score, el("figcaption", {}, `validation ${s.score_name.replace("_", " ")}`)));
  const layers = Object.entries((s.grad_norms || {}).layers || {});
  const maps = [];
  for (const [name, columns] of layers) {
    const canvas = el("canvas", { class: "chart heat", role: "img",
      "aria-label": `‖∂L/∂h_t‖ of ${name}, time step by training step` });
    maps.push([canvas, columns]);
    charts.append(el("figure", {}, canvas, el("figcaption", {}, `‖∂L/∂h_t‖ of ${name}`)));
  }
  box.append(charts);

  const versions = el("ol", { class: "run-versions" });
  for (const v of s.versions) {
    const bits = [`v${v.version}`, `step ${fmtInt(v.step)}`];
    const sc = scoreText(s.score_name, v.valid_score);
    if (sc) bits.push("validation " + sc);
    if (v.final) bits.push("final");
    if (v.test) {
      bits.push("test " + Object.entries(v.test).map(([k, x]) =>
        (k.includes("names") || k === "accuracy" || k === "macro_f1") && x <= 1
          ? `${k.replace(/_/g, " ")} ${(x * 100).toFixed(1)}%` : fmtScore(k, x)).join(", "));
    }
    versions.append(el("li", { class: v.final ? "final" : "" }, bits.join(" · ")));
  }
  box.append(el("div", { class: "run-versions-box" },
    el("h4", {}, "Versions exported"),
    s.versions.length ? versions : el("p", { class: "hint" }, "none yet")));
  // drawn once in the page (the canvases need their laid-out size)
  requestAnimationFrame(() => {
    drawChart(loss, [
      { points: s.train_loss, color: "#1f5fbf" },
      { points: s.validations.map((v) => [v.step, v.loss]), color: "#c0392b", dots: true, line: false },
    ], s.total_steps, "loss");
    drawChart(score, [
      { points: s.validations.map((v) => [v.step, v.score]), color: "#2e8b57", dots: true },
    ], s.total_steps, s.score_name);
    for (const [canvas, columns] of maps) drawHeatmap(canvas, s.grad_norms.steps, columns, s.total_steps);
  });
  return box;
}

let trainingTimer = null;
async function loadTraining() {
  clearTimeout(trainingTimer);
  let next = 5000;
  try {
    const data = await api("GET", "v1/training");
    const runs = Object.entries(data.training);
    $("learning").hidden = !runs.length;
    const box = $("runs");
    box.textContent = "";
    for (const [task, s] of runs) box.append(renderRun(task, s));
    // while something still trains, every 5 s; after that the finished run stays on the page
    if (!runs.some(([, s]) => s.improving)) next = 60000;
  } catch (err) {
    if (err.code === 401) next = 60000;
  }
  trainingTimer = setTimeout(loadTraining, next);
}

// --- wiring -----------------------------------------------------------------------------------

function wire() {
  $("translate-form").addEventListener("submit", translate);
  $("classify-form").addEventListener("submit", classify);
  // Ctrl/Cmd+Enter in a text box sends its form
  for (const id of ["source", "review"]) {
    $(id).addEventListener("input", () => countChars(id));
    countChars(id);
    $(id).addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        event.target.form.requestSubmit();
      }
    });
  }
  document.querySelectorAll(".chip").forEach((chip) => {
    chip.addEventListener("click", () => {
      const box = $(chip.dataset.target);
      box.value = chip.textContent;
      countChars(box.id);
      box.form.requestSubmit();
    });
  });
  $("beam").addEventListener("change", () => {
    $("nbest").max = $("beam").value;
    // n_best cannot exceed the beam: follow it down
    if (Number($("nbest").value) > Number($("beam").value)) $("nbest").value = $("beam").value;
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token-form").hidden = true;
    loadModels();
  });
  loadModels();
  loadTraining();
}

wire();
