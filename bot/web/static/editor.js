// MedCrowd's Mini App outline editor. No build step, no dependencies, nothing from a CDN.
//
// The page shows one leased crop with the current outline (contour + translucent fill). Taps are
// sent to the server, which re-runs the decoder on the crop's cached embedding and returns a new
// mask; brush and eraser edit pixels locally; undo/redo/reset and the candidates work on local
// state. Submit (Telegram's MainButton) stores the mask as the volunteer's answer.
//
// Masks travel as row-major run lengths, background first: [bg, fg, bg, ...].
(function () {
  "use strict";

  const HISTORY = 40;
  const LONG_PRESS_MS = 500;
  const TAP_SLOP = 8; // CSS px a finger may move and still tap
  const FILL = [255, 196, 0, 90]; // translucent amber: visible on greyscale scans
  const EDGE = [255, 214, 10, 255];

  // ---------------------------------------------------------------- Telegram
  // window.Telegram.WebApp (the official script, when a host loads it, or a test's stand-in);
  // else a minimal bridge over the launch data Telegram puts in the URL fragment; else null.
  function telegram() {
    const sdk = window.Telegram && window.Telegram.WebApp;
    if (sdk && sdk.initData) return sdk;
    const launch = new URLSearchParams(location.hash.slice(1));
    const initData = launch.get("tgWebAppData");
    if (!initData) return null;
    let theme = {};
    try { theme = JSON.parse(launch.get("tgWebAppThemeParams") || "{}"); } catch (e) { theme = {}; }
    const listeners = {};
    const receive = (type, data) => (listeners[type] || []).forEach((f) => f(data));
    const post = (type, data) => {
      const message = JSON.stringify({ eventType: type, eventData: data || {} });
      if (window.TelegramWebviewProxy) window.TelegramWebviewProxy.postEvent(type, JSON.stringify(data || {}));
      else if (window.external && "notify" in window.external) window.external.notify(message);
      else if (window.parent !== window) window.parent.postMessage(message, "https://web.telegram.org");
    };
    window.Telegram = window.Telegram || {};
    window.Telegram.WebView = { receiveEvent: receive };
    window.TelegramGameProxy = { receiveEvent: receive };
    window.addEventListener("message", (event) => {
      try {
        const m = JSON.parse(event.data);
        if (m && m.eventType) receive(m.eventType, m.eventData);
      } catch (e) { /* not ours */ }
    });
    const main = { text: "Submit", visible: false, active: true, progress: false };
    const sync = () => post("web_app_setup_main_button", {
      is_visible: main.visible, is_active: main.active, is_progress_visible: main.progress,
      text: main.text, color: theme.button_color, text_color: theme.button_text_color,
    });
    const button = {
      setText(t) { main.text = t; sync(); return button; },
      show() { main.visible = true; sync(); return button; },
      hide() { main.visible = false; sync(); return button; },
      enable() { main.active = true; sync(); return button; },
      disable() { main.active = false; sync(); return button; },
      showProgress() { main.progress = true; sync(); return button; },
      hideProgress() { main.progress = false; sync(); return button; },
      onClick(f) { (listeners.main_button_pressed = listeners.main_button_pressed || []).push(f); return button; },
    };
    return {
      initData, themeParams: theme, MainButton: button,
      ready() { post("web_app_ready"); }, expand() { post("web_app_expand"); },
      close() { post("web_app_close"); },
    };
  }

  function applyTheme(theme) {
    for (const [key, value] of Object.entries(theme || {})) {
      if (typeof value === "string") {
        document.documentElement.style.setProperty("--tg-theme-" + key.replace(/_/g, "-"), value);
      }
    }
  }

  // ---------------------------------------------------------------- masks
  function decodeRuns(runs, n) {
    const mask = new Uint8Array(n);
    let at = 0;
    runs.forEach((run, i) => { if (i % 2) mask.fill(1, at, at + run); at += run; });
    return mask;
  }

  function encodeRuns(mask) {
    const runs = [];
    let value = 0;
    let run = 0;
    for (let i = 0; i < mask.length; i++) {
      if (mask[i] !== value) { runs.push(run); run = 0; value ^= 1; }
      run++;
    }
    runs.push(run);
    return runs;
  }

  // ---------------------------------------------------------------- state
  const $ = (id) => document.getElementById(id);
  const tg = telegram();
  const token = new URLSearchParams(location.search).get("t");
  const api = (name) => new URL("../api/" + name, location.href).toString();
  const S = {
    w: 0, h: 0, proposal: null, candidates: [],
    current: null, // {mask: Uint8Array, points: [[x, y, label]], prompt}
    history: [], future: [],
    tool: "pos", brush: 6, pending: null, seq: 0, chosen: -1,
    view: { scale: 1, tx: 0, ty: 0 },
    image: null, overlay: null, busy: false, submitted: false,
  };
  const canvas = $("view");
  const ctx = canvas.getContext("2d");

  function status(text, state) {
    $("status").textContent = text;
    if (state) document.body.dataset.state = state;
  }

  async function call(name, body) {
    const options = { headers: { Authorization: "tma " + tg.initData } };
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(api(name), options);
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) {
      const error = new Error(data.error || response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function explain(error) {
    if (error.status === 401) return "Your session expired: close the editor and open it again from the chat.";
    return error.message || "Something went wrong; try again.";
  }

  // ---------------------------------------------------------------- drawing
  function paintOverlay() {
    const { w, h } = S;
    const mask = S.current.mask;
    const pixels = new ImageData(w, h);
    const d = pixels.data;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!mask[i]) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
          !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
        d.set(edge ? EDGE : FILL, i * 4);
      }
    }
    S.overlay.getContext("2d").putImageData(pixels, 0, 0);
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const { scale, tx, ty } = S.view;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!S.image) return;
    ctx.setTransform(dpr * scale, 0, 0, dpr * scale, dpr * tx, dpr * ty);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(S.image, 0, 0);
    ctx.drawImage(S.overlay, 0, 0);
    const points = S.pending ? S.pending.points : S.current.points;
    for (const [x, y, label] of points) {
      ctx.beginPath();
      ctx.arc(x, y, 7 / scale, 0, 2 * Math.PI);
      ctx.fillStyle = label ? "#2ecc71" : "#ff3b30";
      ctx.fill();
      ctx.lineWidth = 2 / scale;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    }
  }

  function fit() {
    const box = $("stage").getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(box.width * dpr);
    canvas.height = Math.round(box.height * dpr);
    if (!S.w) return;
    const scale = Math.min(box.width / S.w, box.height / S.h);
    S.view = { scale, tx: (box.width - S.w * scale) / 2, ty: (box.height - S.h * scale) / 2 };
    draw();
  }

  function toImage(clientX, clientY) {
    const box = canvas.getBoundingClientRect();
    const { scale, tx, ty } = S.view;
    return [(clientX - box.left - tx) / scale, (clientY - box.top - ty) / scale];
  }

  // ---------------------------------------------------------------- history
  function refreshButtons() {
    $("undo").disabled = S.history.length === 0;
    $("redo").disabled = S.future.length === 0;
    for (const [i, chip] of [...$("candidates").children].entries()) {
      chip.classList.toggle("on", i === S.chosen);
    }
  }

  function commit(next) {
    S.history.push(S.current);
    if (S.history.length > HISTORY) S.history.shift();
    S.future = [];
    S.current = next;
    S.pending = null;
    paintOverlay();
    draw();
    refreshButtons();
  }

  function step(from, to) {
    if (!from.length) return;
    S.seq++; // a decoder answer still on its way is for a state left behind
    S.pending = null;
    to.push(S.current);
    S.current = from.pop();
    S.chosen = -1;
    paintOverlay();
    draw();
    refreshButtons();
    status("", "ready");
  }

  // ---------------------------------------------------------------- tools
  async function tap(x, y, label) {
    if (x < 0 || y < 0 || x > S.w || y > S.h || S.submitted) return;
    const points = [...(S.pending ? S.pending.points : S.current.points), [x, y, label]];
    const seq = ++S.seq;
    S.pending = { points };
    draw();
    status("Redrawing…", "busy");
    const started = performance.now();
    try {
      const result = await call("refine", { t: S.token, points });
      if (seq !== S.seq) return;
      S.chosen = -1;
      commit({ mask: decodeRuns(result.mask, S.w * S.h), points, prompt: result.prompt });
      const ms = Math.round(performance.now() - started);
      status(`Outline redrawn in ${ms} ms. Tap again, or submit.`, "ready");
    } catch (error) {
      if (seq !== S.seq) return;
      S.pending = null;
      draw();
      status(explain(error), "error");
    }
  }

  function paint(from, to, value) {
    const mask = S.current.mask;
    const r = S.brush;
    const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / (r / 2)));
    for (let s = 0; s <= steps; s++) {
      const cx = from[0] + ((to[0] - from[0]) * s) / steps;
      const cy = from[1] + ((to[1] - from[1]) * s) / steps;
      for (let y = Math.max(0, Math.floor(cy - r)); y <= Math.min(S.h - 1, Math.ceil(cy + r)); y++) {
        for (let x = Math.max(0, Math.floor(cx - r)); x <= Math.min(S.w - 1, Math.ceil(cx + r)); x++) {
          if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r) mask[y * S.w + x] = value;
        }
      }
    }
    paintOverlay();
    draw();
  }

  function beginStroke() {
    S.seq++;
    S.pending = null;
    const copy = { mask: S.current.mask.slice(), points: S.current.points, prompt: S.current.prompt, brushed: true };
    commit(copy);
  }

  function choose(index) {
    if (S.submitted) return;
    const source = index < 0 ? S.proposal : S.candidates[index].mask;
    S.seq++;
    S.chosen = index;
    commit({ mask: source.slice(), points: [], prompt: null });
    status(index < 0 ? "Back to the proposal." : `Picked “${S.candidates[index].name}”.`, "ready");
  }

  function setTool(tool) {
    S.tool = tool;
    for (const b of document.querySelectorAll("[data-tool]")) {
      const on = b.dataset.tool === tool;
      b.classList.toggle("on", on);
      b.setAttribute("aria-pressed", String(on));
    }
    $("size-label").hidden = !(tool === "brush" || tool === "eraser");
  }

  // ---------------------------------------------------------------- gestures
  const touches = new Map();
  let gesture = null;

  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    touches.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (touches.size === 2) {
      if (gesture && gesture.timer) clearTimeout(gesture.timer);
      const [a, b] = [...touches.values()];
      gesture = {
        kind: "pinch", d0: Math.hypot(a.x - b.x, a.y - b.y) || 1,
        mid0: [(a.x + b.x) / 2, (a.y + b.y) / 2], view0: { ...S.view },
      };
      return;
    }
    if (touches.size > 2) return;
    const start = [e.clientX, e.clientY];
    if (S.tool === "brush" || S.tool === "eraser") {
      beginStroke();
      const at = toImage(e.clientX, e.clientY);
      gesture = { kind: "stroke", last: at, value: S.tool === "brush" ? 1 : 0 };
      paint(at, at, gesture.value);
      return;
    }
    gesture = { kind: "tap", start, view0: { ...S.view }, moved: false };
    gesture.timer = setTimeout(() => {
      if (gesture && gesture.kind === "tap" && !gesture.moved) {
        gesture.kind = "done";
        const [x, y] = toImage(start[0], start[1]);
        tap(x, y, 0); // long press: a point outside
      }
    }, LONG_PRESS_MS);
  });

  canvas.addEventListener("pointermove", (e) => {
    if (!touches.has(e.pointerId) || !gesture) return;
    touches.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (gesture.kind === "pinch" && touches.size === 2) {
      const [a, b] = [...touches.values()];
      const d = Math.hypot(a.x - b.x, a.y - b.y);
      const mid = [(a.x + b.x) / 2, (a.y + b.y) / 2];
      const box = canvas.getBoundingClientRect();
      const v = gesture.view0;
      const scale = Math.min(Math.max(v.scale * (d / gesture.d0), 0.2), 40);
      // keep the image point under the first midpoint under the fingers' midpoint
      const ix = (gesture.mid0[0] - box.left - v.tx) / v.scale;
      const iy = (gesture.mid0[1] - box.top - v.ty) / v.scale;
      S.view = { scale, tx: mid[0] - box.left - ix * scale, ty: mid[1] - box.top - iy * scale };
      draw();
    } else if (gesture.kind === "stroke") {
      const at = toImage(e.clientX, e.clientY);
      paint(gesture.last, at, gesture.value);
      gesture.last = at;
    } else if (gesture.kind === "tap" || gesture.kind === "pan") {
      const dx = e.clientX - gesture.start[0];
      const dy = e.clientY - gesture.start[1];
      if (gesture.kind === "tap" && Math.hypot(dx, dy) > TAP_SLOP) {
        clearTimeout(gesture.timer);
        gesture.kind = "pan";
      }
      if (gesture.kind === "pan") {
        S.view = { ...gesture.view0, tx: gesture.view0.tx + dx, ty: gesture.view0.ty + dy };
        draw();
      }
    }
  });

  function release(e) {
    if (!touches.has(e.pointerId)) return;
    touches.delete(e.pointerId);
    if (!gesture) return;
    if (gesture.kind === "tap" && e.type === "pointerup") {
      clearTimeout(gesture.timer);
      const [x, y] = toImage(gesture.start[0], gesture.start[1]);
      tap(x, y, S.tool === "neg" ? 0 : 1);
    }
    if (gesture.timer) clearTimeout(gesture.timer);
    if (touches.size === 0 || gesture.kind === "pinch") gesture = null;
  }
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = canvas.getBoundingClientRect();
    const v = S.view;
    const scale = Math.min(Math.max(v.scale * Math.exp(-e.deltaY / 300), 0.2), 40);
    const px = e.clientX - box.left;
    const py = e.clientY - box.top;
    S.view = { scale, tx: px - ((px - v.tx) / v.scale) * scale, ty: py - ((py - v.ty) / v.scale) * scale };
    draw();
  }, { passive: false });

  // ---------------------------------------------------------------- submit
  async function submit() {
    if (S.submitted || S.busy) return;
    S.busy = true;
    const main = tg.MainButton;
    if (main && main.showProgress) main.showProgress();
    $("submit").disabled = true;
    status("Saving…", "busy");
    try {
      const prompt = S.current.prompt ? { ...S.current.prompt, brushed: Boolean(S.current.brushed) } : null;
      await call("submit", { t: S.token, size: [S.h, S.w], mask: encodeRuns(S.current.mask), prompt });
      S.submitted = true;
      status("Saved ✓ The chat shows your next crop.", "submitted");
      if (main) main.hide();
      setTimeout(() => tg.close && tg.close(), 700);
    } catch (error) {
      status(explain(error), "error");
      $("submit").disabled = false;
    } finally {
      S.busy = false;
      if (main && main.hideProgress) main.hideProgress();
    }
  }

  // ---------------------------------------------------------------- start
  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error("the crop image did not load"));
      image.src = src;
    });
  }

  async function start() {
    if (!tg) {
      $("outside").hidden = false;
      document.body.dataset.state = "outside";
      return;
    }
    applyTheme(tg.themeParams);
    if (tg.ready) tg.ready();
    if (tg.expand) tg.expand();
    $("editor").hidden = false;
    fit();
    try {
      const crop = await call("crop" + (token ? "?t=" + encodeURIComponent(token) : ""));
      S.token = crop.token;
      S.w = crop.width;
      S.h = crop.height;
      const n = S.w * S.h;
      S.proposal = decodeRuns(crop.proposal, n);
      S.candidates = crop.candidates.map((c) => ({ name: c.name, mask: decodeRuns(c.mask, n) }));
      S.current = { mask: decodeRuns(crop.mask, n), points: [], prompt: null };
      S.image = await loadImage(crop.image);
      S.overlay = document.createElement("canvas");
      S.overlay.width = S.w;
      S.overlay.height = S.h;
      $("question").textContent = `Outline the ${crop.structure}.`;
      for (const [i, c] of S.candidates.entries()) {
        const chip = document.createElement("button");
        chip.type = "button";
        chip.textContent = `${i + 1}. ${c.name}`;
        chip.addEventListener("click", () => choose(i));
        $("candidates").appendChild(chip);
      }
      paintOverlay();
      fit();
      refreshButtons();
      const hint = crop.takes_points
        ? "Tap inside the structure (+) or outside it (−, or long-press). Pinch to zoom."
        : "Taps move the box the model outlines: + outside grows it, − inside shrinks it. Pinch to zoom.";
      status(hint, "ready");
      if (tg.MainButton) {
        tg.MainButton.setText("Submit outline");
        tg.MainButton.onClick(submit);
        tg.MainButton.show();
      } else {
        $("submit").hidden = false;
      }
    } catch (error) {
      status(explain(error), "error");
    }
  }

  for (const b of document.querySelectorAll("[data-tool]")) {
    b.addEventListener("click", () => setTool(b.dataset.tool));
  }
  $("undo").addEventListener("click", () => step(S.history, S.future));
  $("redo").addEventListener("click", () => step(S.future, S.history));
  $("reset").addEventListener("click", () => S.current && choose(-1));
  $("size").addEventListener("input", (e) => { S.brush = Number(e.target.value); });
  $("submit").addEventListener("click", submit);
  window.addEventListener("resize", fit);

  // What the browser tests read (never used by the page itself).
  window.medcrowdEditor = {
    area: () => (S.current ? S.current.mask.reduce((a, b) => a + b, 0) : 0),
    points: () => (S.current ? S.current.points.length : 0),
    toScreen: (x, y) => {
      const box = canvas.getBoundingClientRect();
      return [box.left + S.view.tx + x * S.view.scale, box.top + S.view.ty + y * S.view.scale];
    },
    size: () => [S.w, S.h],
    scale: () => S.view.scale,
    submit,
  };

  start();
})();
