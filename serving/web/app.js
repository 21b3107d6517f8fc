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

function renderModels(data) {
  const list = $("model-list");
  list.textContent = "";
  if (!data.models.length) list.append(el("p", {}, "no models are loaded"));
  for (const m of data.models) {
    const task = m.task === "TASK_TRANSLATE" ? "translate" : "classify";
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
    if (task === "translate") {
      rows.push(["Defaults", `beam ${m.default_beam_size}, max length ${m.default_max_length}, ` +
        `length penalty ${m.default_length_penalty}`]);
      $("beam").value = m.default_beam_size;
      $("translate-langs").textContent = `${m.source_language} → ${m.target_language}`;
    } else {
      $("classify-dataset").textContent = m.dataset;
    }
    const dl = el("dl");
    for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, v));
    list.append(el("article", { class: "model", id: "model-" + task },
      el("h3", {}, task + " ", el("span", { class: "version" }, "v" + m.version)), dl));
  }
  const lim = data.limits;
  $("beam").max = lim.max_beam_size;
  $("nbest").max = Math.min(lim.max_n_best, Number($("beam").value));
  if (Number($("nbest").value) > Number($("nbest").max)) $("nbest").value = $("nbest").max;
  const names = data.models.map((m) =>
    `${m.task === "TASK_TRANSLATE" ? "translate" : "classify"} v${m.version}`);
  setStatus("ok", "ready: " + names.join(", "));
}

function setStatus(kind, text) {
  const status = $("status");
  status.className = "status " + kind;
  status.textContent = text;
}

async function loadModels() {
  try {
    renderModels(await api("GET", "v1/models"));
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

// SentencePiece pieces → words: a word starts at a piece beginning with "▁".
function words(pieces) {
  const spans = [];
  pieces.forEach((piece, i) => {
    if (piece === "<eos>") return;
    if (piece.startsWith("\u2581") || !spans.length) spans.push([]);
    spans[spans.length - 1].push(i);
  });
  return spans.map((span) => ({
    text: span.map((i) => pieces[i]).join("").replace(/^\u2581/, ""),
    span,
  }));
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
  h.source_tokens.forEach((p) => head.append(el("th", { scope: "col" }, p)));
  table.append(el("thead", {}, head));
  const rows = [];
  const body = el("tbody");
  h.target_tokens.forEach((piece, t) => {
    const row = el("tr", {}, el("th", { scope: "row" }, piece));
    for (let s = 0; s < S; s++) {
      const w = weight(t, s);
      row.append(el("td", {
        title: `${piece} ← ${h.source_tokens[s]}: ${w.toFixed(2)}`,
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

function renderTranslation(data) {
  const hyps = data.translations[0].hypotheses;
  const list = $("hypotheses");
  list.textContent = "";
  const buttons = hyps.map((h, i) => {
    const button = el("button", { type: "button", "aria-pressed": String(i === 0) },
      el("span", { class: "text" }, h.text || "(empty)"),
      el("span", { class: "score", title: "log-probability (length-normalised for beam)" },
        "score " + h.score.toFixed(3)));
    button.addEventListener("click", () => {
      buttons.forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      renderAlignment(h);
    });
    list.append(el("li", {}, button));
    return button;
  });
  $("alignment").hidden = true;
  if (hyps.length) renderAlignment(hyps[0]);
  $("translate-result").hidden = false;
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
  $("classify-result").hidden = false;
}

async function classify(event) {
  event.preventDefault();
  await busy($("classify-button"), $("classify-error"), async () => {
    $("classify-result").hidden = true;
    renderClassification(await api("POST", "v1/classify", { texts: [$("review").value] }));
  });
}

// --- wiring -----------------------------------------------------------------------------------

function wire() {
  $("translate-form").addEventListener("submit", translate);
  $("classify-form").addEventListener("submit", classify);
  // Ctrl/Cmd+Enter in a text box sends its form
  for (const id of ["source", "review"]) {
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
}

wire();
