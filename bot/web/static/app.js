// moodbot demo page: pick, drop or shoot a photo, send it to /api/analyze, draw the answer.
// The photo goes to this server only and is not kept there; nothing here loads from elsewhere.
"use strict";

const LANG_KEY = "moodbot-lang";
const KIND_ICON = { track: "♪", playlist: "☰" };

const state = { ui: null, lang: "en", file: null, previewUrl: null, busy: false, ref: null, face: null };

const $ = (id) => document.getElementById(id);

function text(key) {
  return state.ui.texts[state.lang][key];
}

function emotionName(emotion) {
  return text("emotions")[emotion] || emotion;
}

function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

// --- language ----------------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = state.lang;
  document.title = text("title");
  for (const element of document.querySelectorAll("[data-text]")) {
    element.textContent = text(element.dataset.text);
  }
  const toggle = $("lang");
  toggle.textContent = text("language");
  toggle.lang = state.lang === "ko" ? "en" : "ko";
}

function toggleLanguage() {
  const languages = state.ui.languages;
  state.lang = languages[(languages.indexOf(state.lang) + 1) % languages.length];
  try {
    localStorage.setItem(LANG_KEY, state.lang);
  } catch {
    // Private browsing may refuse storage: the toggle still works for this visit.
  }
  applyLanguage();
  // The server words its answer in the chosen language: ask again for the photo on screen.
  if (state.file && !state.busy) analyse(state.file);
}

function savedLanguage() {
  try {
    return localStorage.getItem(LANG_KEY);
  } catch {
    return null;
  }
}

// --- showing things ----------------------------------------------------------------------

function showError(message, code) {
  const box = $("error");
  box.textContent = message;
  box.dataset.code = code || "";
  box.hidden = false;
}

function clearOutcome() {
  $("error").hidden = true;
  $("error").dataset.code = "";
  $("result").hidden = true;
  $("overlay").replaceChildren();
}

function setBusy(busy) {
  state.busy = busy;
  $("status").hidden = !busy;
  document.body.dataset.busy = busy ? "1" : "";
}

function showPreview(file) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  const photo = $("photo");
  photo.onerror = () => {
    $("figure").hidden = true;
  };
  photo.src = state.previewUrl;
  $("figure").hidden = false;
}

function svg(name, attributes, content) {
  const overlay = $("overlay");
  // The overlay's own namespace: no namespace URL needs to be spelled out here.
  const element = document.createElementNS(overlay.namespaceURI, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (content !== undefined) element.textContent = content;
  return element;
}

function drawFaces(result) {
  const overlay = $("overlay");
  const { width, height } = result.image;
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const stroke = Math.max(2, Math.round(Math.max(width, height) / 200));
  const fontSize = Math.max(12, Math.round(Math.max(width, height) / 28));
  const shapes = [];
  result.faces.forEach((face, index) => {
    const [x, y, w, h] = face.box;
    const cls = index === 0 ? "face main" : "face";
    shapes.push(svg("rect", { x, y, width: w, height: h, class: cls, "stroke-width": stroke }));
    const label = `${face.emoji} ${face.label} ${Math.round(face.confidence * 100)}%`;
    const tagHeight = fontSize * 1.4;
    const tagWidth = Math.min(width, [...label].length * fontSize * 0.64 + fontSize * 1.4);
    // Above the box when there is room, and always inside the picture.
    const tagX = Math.max(0, Math.min(x, width - tagWidth));
    const tagY = y >= tagHeight ? y - tagHeight : y;
    shapes.push(
      svg("rect", { x: tagX, y: tagY, width: tagWidth, height: tagHeight, rx: 4, class: "tag" }),
    );
    const textAt = { x: tagX + fontSize * 0.4, y: tagY + fontSize * 1.05, "font-size": fontSize };
    shapes.push(svg("text", textAt, label));
  });
  overlay.replaceChildren(...shapes);
}

// Each bar is a button: "Not quite?" — pressing it asks for music for that mood instead.
function drawScores(face, chosen) {
  const rows = Object.entries(face.scores)
    .sort((a, b) => b[1] - a[1])
    .map(([emotion, p]) => {
      const row = document.createElement("li");
      const bar = document.createElement("button");
      bar.type = "button";
      bar.dataset.emotion = emotion;
      bar.setAttribute("aria-pressed", emotion === chosen ? "true" : "false");
      bar.addEventListener("click", () => correct(emotion));
      const name = document.createElement("span");
      name.textContent = emotionName(emotion);
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${Math.round(p * 100)}%`;
      track.append(fill);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = `${Math.round(p * 100)}%`;
      bar.append(name, track, pct);
      row.append(bar);
      return row;
    });
  $("scores").replaceChildren(...rows);
}

function drawLinks(links) {
  const items = links.map((link) => {
    const item = document.createElement("li");
    const anchor = document.createElement("a");
    anchor.href = link.url;
    anchor.target = "_blank";
    anchor.rel = "noopener noreferrer";
    const icon = document.createElement("span");
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = KIND_ICON[link.kind] || "♪";
    const title = document.createElement("span");
    title.textContent = link.label || link.title;
    anchor.append(icon, title);
    item.append(anchor);
    return item;
  });
  $("links").replaceChildren(...items);
}

function showMood(result) {
  $("emoji").textContent = result.emoji;
  $("emotion").textContent = result.label;
  $("emotion").dataset.emotion = result.emotion;
  $("headline").textContent = result.headline;
  $("why").textContent = result.why;
  drawLinks(result.links);
  state.ref = result.correction ? result.correction.ref : null;
}

function showResult(result) {
  drawFaces(result);
  showMood(result);
  state.face = result.faces[0];
  drawScores(state.face, result.emotion);
  $("result").hidden = false;
}

// "Not quite?": music for the mood the person says they feel (the web stores nothing).
async function correct(emotion) {
  if (!state.ref || state.busy) return;
  $("error").hidden = true;
  setBusy(true);
  let result;
  try {
    const response = await fetch(`/api/correct?lang=${encodeURIComponent(state.lang)}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ref: state.ref, emotion }),
    });
    result = await response.json();
  } catch {
    setBusy(false);
    showError(text("network"), "network");
    return;
  }
  setBusy(false);
  if (!result.ok) {
    showError(result.error.message, result.error.code);
    return;
  }
  showMood(result);
  drawScores(state.face, result.emotion);
}

// --- the round trip ----------------------------------------------------------------------

async function analyse(file) {
  state.file = file;
  clearOutcome();
  if (file.size > state.ui.max_bytes) {
    // Refused here, before minutes of uploading on a phone; the server would refuse it too.
    $("figure").hidden = true;
    const detail = `${megabytes(file.size)}; the limit is ${megabytes(state.ui.max_bytes)}`;
    showError(text("too_large").replace("{detail}", detail), "too_large");
    return;
  }
  showPreview(file);
  setBusy(true);
  const form = new FormData();
  form.append(state.ui.field, file, file.name || "photo");
  let result;
  try {
    const response = await fetch(`/api/analyze?lang=${encodeURIComponent(state.lang)}`, {
      method: "POST",
      body: form,
    });
    result = await response.json();
  } catch {
    setBusy(false);
    showError(text("network"), "network");
    return;
  }
  setBusy(false);
  if (state.file !== file) return; // another photo was picked meanwhile
  if (!result.ok) {
    if (result.error.code !== "no_face") $("figure").hidden = true;
    showError(result.error.message, result.error.code);
    return;
  }
  showResult(result);
}

function pickFrom(input) {
  input.addEventListener("change", () => {
    const [file] = input.files;
    if (file) analyse(file);
    input.value = ""; // so that choosing the same file again still counts as a change
  });
}

function acceptDrops(zone) {
  const over = (event) => {
    event.preventDefault();
    zone.classList.add("over");
  };
  zone.addEventListener("dragenter", over);
  zone.addEventListener("dragover", over);
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const [file] = event.dataTransfer.files;
    if (file) analyse(file);
  });
}

async function start() {
  try {
    const response = await fetch("/api/ui");
    state.ui = await response.json();
  } catch {
    showError("moodbot is not reachable. Reload the page in a moment.", "network");
    return;
  }
  const saved = savedLanguage();
  state.lang = state.ui.languages.includes(saved) ? saved : state.ui.lang;
  applyLanguage();
  pickFrom($("file"));
  pickFrom($("camera"));
  acceptDrops($("drop"));
  $("lang").addEventListener("click", toggleLanguage);
  document.body.dataset.ready = "1";
}

start();
