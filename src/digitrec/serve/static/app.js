// digitrec drawing page: draw (mouse, pen, touch) or drop an image; predictions update as you draw.
// Plain browser JavaScript, no build step and no third-party code.
"use strict";

(function () {
  const API = "/v1/predict?input=true";
  const DEBOUNCE_MS = 150; // wait this long after the last stroke change before asking
  const MAX_SILENCE_MS = 400; // ...but while drawing, ask at least this often
  const LINE_WIDTH = 20; // pen width on the 280 px pad: MNIST strokes are ~2 px of 28

  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const seen = document.getElementById("seen");
  const seenCtx = seen.getContext("2d");
  const digitEl = document.getElementById("digit");
  const confidenceEl = document.getElementById("confidence");
  const statusEl = document.getElementById("status");
  const barsEl = document.getElementById("bars");
  const resultEl = document.querySelector(".result");
  const fileInput = document.getElementById("file");
  const dropzone = document.getElementById("dropzone");

  // Ten bars, built once.
  const bars = [];
  for (let d = 0; d < 10; d++) {
    const li = document.createElement("li");
    li.className = "bar";
    li.dataset.digit = String(d);
    li.innerHTML =
      '<span class="label">' + d + "</span>" +
      '<span class="track" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0" ' +
      'aria-label="probability of ' + d + '"><span class="fill"></span></span>' +
      '<span class="pct">0%</span>';
    barsEl.appendChild(li);
    bars.push(li);
  }

  function clearPad() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
  }

  function resetResult(message) {
    digitEl.textContent = "\u2013";
    confidenceEl.textContent = message;
    statusEl.textContent = "";
    resultEl.classList.remove("unsure");
    for (const li of bars) setBar(li, 0, false);
    seenCtx.clearRect(0, 0, seen.width, seen.height);
    document.body.dataset.state = "idle";
  }

  function setBar(li, p, top) {
    const pct = Math.round(p * 1000) / 10;
    li.dataset.p = String(p);
    li.classList.toggle("top", top);
    li.querySelector(".fill").style.width = pct + "%";
    li.querySelector(".track").setAttribute("aria-valuenow", String(pct));
    li.querySelector(".pct").textContent = pct.toFixed(1) + "%";
  }

  function showPrediction(body) {
    const probs = body.probabilities;
    const best = body.digit;
    digitEl.textContent = best === null ? "?" : String(best);
    confidenceEl.textContent = best === null
      ? "No digit found."
      : "Confidence " + (body.confidence * 100).toFixed(1) + "%" + (body.unsure ? " (unsure)" : "");
    resultEl.classList.toggle("unsure", Boolean(body.unsure));
    // No digit (a blank image) comes with no probabilities: all bars go to zero.
    bars.forEach((li, d) => setBar(li, probs[d] || 0, d === best));
    if (body.input) drawSeen(body.input);
    statusEl.textContent = "";
    document.body.dataset.state = "done";
  }

  function drawSeen(rows) {
    const img = seenCtx.createImageData(28, 28);
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) {
        const v = rows[y][x];
        const i = (y * 28 + x) * 4;
        img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
        img.data[i + 3] = 255;
      }
    }
    seenCtx.putImageData(img, 0, 0);
  }

  function showError(message) {
    digitEl.textContent = "\u2013";
    confidenceEl.textContent = "";
    statusEl.textContent = message;
    for (const li of bars) setBar(li, 0, false);
    document.body.dataset.state = "error";
  }

  // Only the answer to the latest request is shown; older ones are aborted.
  let inflight = null;
  async function predict(blob, type) {
    if (inflight) inflight.abort();
    const controller = new AbortController();
    inflight = controller;
    document.body.dataset.state = "busy";
    try {
      const response = await fetch(API, {
        method: "POST",
        headers: { "Content-Type": type || "application/octet-stream" },
        body: blob,
        signal: controller.signal,
      });
      const body = await response.json();
      if (controller !== inflight) return;
      if (response.ok) showPrediction(body);
      else showError(body.error || "The server answered " + response.status + ".");
    } catch (err) {
      if (err.name !== "AbortError") showError("Cannot reach the server.");
    } finally {
      if (controller === inflight) inflight = null;
    }
  }

  function predictPad() {
    lastAsked = performance.now();
    pad.toBlob((blob) => blob && predict(blob, "image/png"), "image/png");
  }

  // Debounce while drawing, with a ceiling on silence so long strokes still update live.
  let timer = null;
  let lastAsked = 0;
  function schedule() {
    clearTimeout(timer);
    if (performance.now() - lastAsked > MAX_SILENCE_MS) predictPad();
    else timer = setTimeout(predictPad, DEBOUNCE_MS);
  }

  // Drawing with pointer events covers mouse, pen and touch alike.
  let drawing = false;
  let last = null;
  function point(ev) {
    const r = pad.getBoundingClientRect();
    return { x: (ev.clientX - r.left) * (pad.width / r.width), y: (ev.clientY - r.top) * (pad.height / r.height) };
  }
  function strokeTo(p) {
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
  }
  pad.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    drawing = true;
    ctx.strokeStyle = "#000";
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    last = point(ev);
    strokeTo({ x: last.x + 0.01, y: last.y }); // a tap leaves a dot
    schedule();
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
    for (const e of events.length ? events : [ev]) strokeTo(point(e));
    schedule();
  });
  function endStroke() {
    if (!drawing) return;
    drawing = false;
    clearTimeout(timer);
    predictPad();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function clearAll() {
    clearTimeout(timer);
    if (inflight) inflight.abort();
    clearPad();
    resetResult("Draw something to start.");
  }
  document.getElementById("clear").addEventListener("click", clearAll);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !ev.target.closest("input, textarea")) clearAll();
  });

  // Image files: picked or dropped. The file goes to the server as is; the pad shows it.
  function useFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError("That is not an image file.");
      return;
    }
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      clearPad();
      const s = Math.min(pad.width / img.width, pad.height / img.height);
      const w = img.width * s;
      const h = img.height * s;
      ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
      URL.revokeObjectURL(url);
    };
    img.onerror = () => URL.revokeObjectURL(url);
    img.src = url;
    predict(file, file.type);
  }
  fileInput.addEventListener("change", () => {
    useFile(fileInput.files[0]);
    fileInput.value = ""; // choosing the same file again still triggers
  });
  dropzone.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    dropzone.classList.add("dragging");
  });
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("dragging"));
  dropzone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dropzone.classList.remove("dragging");
    useFile(ev.dataTransfer.files[0]);
  });

  clearPad();
  resetResult("Draw something to start.");
})();
