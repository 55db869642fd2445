// digitrec drawing page: draw (mouse, pen, touch) or drop an image; answers update as you draw.
// Two modes share the same pieces: "digit" reads one digit, "number" asks /v1/read about a whole
// number written on a wide pad and draws the digits' boxes over it. Digit mode reads drawings in
// the page itself when it can (preprocess.js and the model's ONNX graph in ONNX Runtime Web, the
// vendored runtime under /static/vendor/), and asks /v1/predict otherwise; uploads always go to
// the server. Plain browser JavaScript, no build step; the only third-party code is that runtime.
"use strict";

(function () {
  const DEBOUNCE_MS = 150; // digit mode: wait this long after the last stroke change before asking
  const MAX_SILENCE_MS = 400; // ...but while drawing, ask at least this often
  const READ_DEBOUNCE_MS = 250; // number mode: ask this long after the pen lifts (digits take several strokes)
  const LINE_WIDTH = 20; // pen width on a 280 px tall pad: MNIST strokes are ~2 px of 28
  const LINE_HEIGHT = 280; // the number pad's height in canvas pixels; its width follows its shape on screen
  const SVG_NS = "http://www.w3.org/2000/svg";
  const RUNTIME_DIR = "/static/vendor/onnxruntime-web/";

  const pct = (p) => (p * 100).toFixed(1) + "%";

  // ---------------------------------------------------------------------------------------
  // Shared pieces

  // A mode's state ("idle", "busy", "done", "error") is kept on its <main>; the active mode's
  // is mirrored on <body>.
  let active = null;
  function setState(mode, state) {
    mode.root.dataset.state = state;
    if (mode === active) document.body.dataset.state = state;
  }

  // A drawing pad on a canvas. Pointer events cover mouse, pen and touch alike;
  // onStroke(phase) hears "start", "move" and "end".
  function makePad(canvas, onStroke) {
    // Read back often (digit mode reads its pixels in the page): keep the canvas in memory.
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    let drawing = false;
    let last = null;
    let empty = true;

    function point(ev) {
      const r = canvas.getBoundingClientRect();
      return {
        x: (ev.clientX - r.left) * (canvas.width / r.width),
        y: (ev.clientY - r.top) * (canvas.height / r.height),
      };
    }
    function strokeTo(p) {
      ctx.beginPath();
      ctx.moveTo(last.x, last.y);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
      last = p;
    }
    canvas.addEventListener("pointerdown", (ev) => {
      ev.preventDefault();
      canvas.setPointerCapture(ev.pointerId);
      drawing = true;
      empty = false;
      ctx.strokeStyle = "#000";
      ctx.lineWidth = LINE_WIDTH;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      last = point(ev);
      strokeTo({ x: last.x + 0.01, y: last.y }); // a tap leaves a dot
      onStroke("start");
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (!drawing) return;
      const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
      for (const e of events.length ? events : [ev]) strokeTo(point(e));
      onStroke("move");
    });
    function endStroke() {
      if (!drawing) return;
      drawing = false;
      onStroke("end");
    }
    canvas.addEventListener("pointerup", endStroke);
    canvas.addEventListener("pointercancel", endStroke);

    function clear() {
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      empty = true;
    }
    return {
      canvas,
      get empty() { return empty; },
      clear,
      // Show a picture on the pad, scaled to fit and centred on white.
      showImage(img) {
        clear();
        const s = Math.min(canvas.width / img.width, canvas.height / img.height);
        const w = img.width * s;
        const h = img.height * s;
        ctx.drawImage(img, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
        empty = false;
      },
      // The pad's pixels (RGBA), as the server would decode them from toPng's file.
      pixels() { return ctx.getImageData(0, 0, canvas.width, canvas.height); },
      // The pad as a PNG, with the size its pixels (and so the answer's boxes) are in.
      toPng(callback) {
        const size = { width: canvas.width, height: canvas.height };
        canvas.toBlob((blob) => blob && callback(blob, size), "image/png");
      },
      resize(width, height) { // clears the pad
        canvas.width = width;
        canvas.height = height;
        clear();
      },
    };
  }

  // Posts images to one endpoint. Only the answer to the latest request is shown: a new
  // request aborts the one in flight, and a stale answer that still arrives is dropped.
  function makeClient(mode, url, onAnswer, onError) {
    let inflight = null;
    async function send(blob, type, context) {
      if (inflight) inflight.abort();
      const controller = new AbortController();
      inflight = controller;
      setState(mode, "busy");
      try {
        const response = await fetch(url, {
          method: "POST",
          headers: { "Content-Type": type || "application/octet-stream" },
          body: blob,
          signal: controller.signal,
        });
        const body = await response.json();
        if (controller !== inflight) return;
        if (response.ok) onAnswer(body, context);
        else onError(body.error || "The server answered " + response.status + ".");
      } catch (err) {
        if (err.name !== "AbortError" && controller === inflight) onError("Cannot reach the server.");
      } finally {
        if (controller === inflight) inflight = null;
      }
    }
    function cancel() {
      if (inflight) inflight.abort();
      inflight = null;
    }
    return { send, cancel };
  }

  // Debounce: run() once things have been quiet for `delay` ms; with `maxSilence`, also at
  // least that often while they keep changing (so long strokes still update live).
  function makeScheduler(run, delay, maxSilence) {
    let timer = null;
    let lastRun = 0;
    function now() {
      clearTimeout(timer);
      lastRun = performance.now();
      run();
    }
    return {
      now,
      soon() {
        clearTimeout(timer);
        if (maxSilence && performance.now() - lastRun > maxSilence) now();
        else timer = setTimeout(now, delay);
      },
      cancel() { clearTimeout(timer); },
    };
  }

  // Image files, picked with a file input or dropped on a zone, go to onFile(file).
  function acceptFiles(input, zone, onFile) {
    input.addEventListener("change", () => {
      if (input.files[0]) onFile(input.files[0]);
      input.value = ""; // choosing the same file again still triggers
    });
    zone.addEventListener("dragover", (ev) => {
      ev.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      zone.classList.remove("dragging");
      if (ev.dataTransfer.files[0]) onFile(ev.dataTransfer.files[0]);
    });
  }

  // Decode an image file in the browser: onload(img) once it is shown, or onerror().
  function openImage(file, onload, onerror) {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      onload(img);
      URL.revokeObjectURL(url);
    };
    img.onerror = () => {
      URL.revokeObjectURL(url);
      if (onerror) onerror();
    };
    img.src = url;
  }

  // The status line of a mode: errors in red (see style.css), nothing when empty.
  function showStatus(mode, el, message) {
    el.textContent = message;
    setState(mode, "error");
  }

  // ---------------------------------------------------------------------------------------
  // In-page inference. The runtime, the model's graph (/v1/model.onnx) and its unsure threshold
  // (/v1/model) load once, in the background; body[data-engine] says where drawings are read:
  // "pending" while loading, "local" once the page can read them itself, "server" when it cannot
  // (the runtime files or the graph cannot be fetched, no WebAssembly): then the server answers
  // every drawing, as before, and `reason` says why.

  const localEngine = (function () {
    const engine = { session: null, minConfidence: 0, reason: "the in-browser model is still loading" };
    document.body.dataset.engine = "pending";

    function loadScript(src) {
      return new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = src;
        script.onload = resolve;
        script.onerror = () => reject(new Error("cannot load " + src));
        document.head.appendChild(script);
      });
    }

    async function start() {
      if (typeof WebAssembly !== "object") throw new Error("this browser has no WebAssembly");
      if (!window.DigitrecPreprocess) throw new Error("the preprocessing script did not load");
      await loadScript(RUNTIME_DIR + "ort.wasm.min.js");
      const ort = window.ort;
      if (!ort) throw new Error("the runtime did not load");
      ort.env.wasm.wasmPaths = RUNTIME_DIR;
      ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one reads a 28x28 in a blink
      ort.env.wasm.proxy = false;
      const get = (url) => fetch(url).catch(() => { throw new Error("cannot fetch " + url); });
      const [graph, info] = await Promise.all([get("/v1/model.onnx"), get("/v1/model")]);
      if (!graph.ok) throw new Error("the server has no graph of its model (" + graph.status + ")");
      if (!info.ok) throw new Error("the server did not describe its model (" + info.status + ")");
      const model = await info.json();
      const bytes = new Uint8Array(await graph.arrayBuffer());
      engine.session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
      engine.ort = ort;
      engine.minConfidence = model.min_confidence;
    }

    function giveUp(err) {
      engine.session = null;
      engine.reason = "the in-browser model is off (" + ((err && err.message) || String(err)) + ")";
      document.body.dataset.engine = "server";
    }
    engine.ready = start().then(() => {
      engine.reason = "";
      document.body.dataset.engine = "local";
    }, giveUp);

    // The answer for the pad's pixels, shaped as /v1/predict?input=true answers, or null when
    // preprocess.js cannot prepare this picture exactly (the server must).
    engine.predict = async function (pixels) {
      const pre = window.DigitrecPreprocess;
      let input;
      try {
        input = pre.fromImageData(pixels);
      } catch (err) {
        if (err instanceof pre.Unsupported) return null;
        throw err;
      }
      const rows = [];
      for (let y = 0; y < 28; y++) {
        const row = [];
        for (let x = 0; x < 28; x++) row.push(input ? pre.roundHalfEven(Math.fround(input[y * 28 + x] * 255)) : 0);
        rows.push(row);
      }
      if (input === null) return { digit: null, confidence: 0, unsure: true, probabilities: [], input: rows };
      const session = engine.session;
      const feeds = { [session.inputNames[0]]: new engine.ort.Tensor("float32", input, [1, 28, 28]) };
      const out = await session.run(feeds);
      const probabilities = Array.from(out[session.outputNames[0]].data);
      let digit = 0;
      probabilities.forEach((p, d) => { if (p > probabilities[digit]) digit = d; });
      const confidence = probabilities[digit];
      return { digit, confidence, unsure: confidence < engine.minConfidence, probabilities, input: rows };
    };
    engine.broken = giveUp;
    return engine;
  })();

  // ---------------------------------------------------------------------------------------
  // Digit mode: one digit on a square pad, ten probability bars, the 28x28 the model saw.

  const digitMode = (function () {
    const mode = { root: document.getElementById("digit-mode"), title: "digitrec: draw a digit",
                   intro: "Draw a digit (0\u20139) with your mouse, pen or finger, or drop a picture of one." };
    const seen = document.getElementById("seen");
    const seenCtx = seen.getContext("2d");
    const digitEl = document.getElementById("digit");
    const confidenceEl = document.getElementById("confidence");
    const statusEl = document.getElementById("status");
    const pathEl = document.getElementById("path");
    const barsEl = document.getElementById("bars");
    const resultEl = mode.root.querySelector(".result");

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

    function setBar(li, p, top) {
      const value = Math.round(p * 1000) / 10;
      li.dataset.p = String(p);
      li.classList.toggle("top", top);
      li.querySelector(".fill").style.width = value + "%";
      li.querySelector(".track").setAttribute("aria-valuenow", String(value));
      li.querySelector(".pct").textContent = value.toFixed(1) + "%";
    }

    function resetResult(message) {
      digitEl.textContent = "\u2013";
      confidenceEl.textContent = message;
      statusEl.textContent = "";
      resultEl.classList.remove("unsure");
      for (const li of bars) setBar(li, 0, false);
      seenCtx.clearRect(0, 0, seen.width, seen.height);
      pathEl.textContent = "";
      delete document.body.dataset.answeredBy;
      setState(mode, "idle");
    }

    // Which side answered: "local" (this page) or "server", and why the server when it could be local.
    function showPath(path, why) {
      document.body.dataset.answeredBy = path;
      pathEl.textContent = path === "local"
        ? "Read in this browser (ONNX Runtime Web)."
        : "Read by the server" + (why ? ": " + why + "." : ".");
    }

    function showPrediction(body, path, why) {
      const probs = body.probabilities;
      const best = body.digit;
      digitEl.textContent = best === null ? "?" : String(best);
      confidenceEl.textContent = best === null
        ? "No digit found."
        : "Confidence " + pct(body.confidence) + (body.unsure ? " (unsure)" : "");
      resultEl.classList.toggle("unsure", Boolean(body.unsure));
      // No digit (a blank image) comes with no probabilities: all bars go to zero.
      bars.forEach((li, d) => setBar(li, probs[d] || 0, d === best));
      if (body.input) drawSeen(body.input);
      statusEl.textContent = "";
      showPath(path, why);
      setState(mode, "done");
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
      for (const li of bars) setBar(li, 0, false);
      showStatus(mode, statusEl, message);
    }

    // Only the latest question is answered: each one (and each clear) takes a new ticket, and a
    // local answer is shown only while its ticket is the latest, as the client does for the server's.
    let ticket = 0;
    const client = makeClient(mode, "/v1/predict?input=true",
                              (body, why) => showPrediction(body, "server", why), showError);
    function askServer(why) {
      pad.toPng((blob) => client.send(blob, "image/png", why));
    }
    async function askLocal(mine) {
      let answer = null;
      try {
        answer = await localEngine.predict(pad.pixels());
      } catch (err) {
        localEngine.broken(err); // a runtime that fails once is not trusted again
      }
      if (mine !== ticket) return;
      if (answer) showPrediction(answer, "local");
      else askServer(localEngine.session ? "this drawing needs the server's preprocessing" : localEngine.reason);
    }
    function ask() {
      const mine = ++ticket;
      if (!localEngine.session) {
        askServer(localEngine.reason);
        return;
      }
      client.cancel(); // an upload still in flight must not overwrite this drawing's answer
      setState(mode, "busy");
      askLocal(mine);
    }
    const pad = makePad(document.getElementById("pad"), (phase) => {
      if (phase === "end") scheduler.now();
      else scheduler.soon();
    });
    const scheduler = makeScheduler(ask, DEBOUNCE_MS, MAX_SILENCE_MS);

    mode.clear = function () {
      ticket++;
      scheduler.cancel();
      client.cancel();
      pad.clear();
      resetResult("Draw something to start.");
    };
    document.getElementById("clear").addEventListener("click", mode.clear);

    // The file goes to the server as is; the pad shows it.
    acceptFiles(document.getElementById("file"), document.getElementById("dropzone"), (file) => {
      if (file.type && !file.type.startsWith("image/")) {
        showError("That is not an image file.");
        return;
      }
      scheduler.cancel();
      ticket++;
      openImage(file, pad.showImage);
      client.send(file, file.type, "uploaded files are read by the server");
    });

    pad.clear();
    resetResult("Draw something to start.");
    return mode;
  })();

  // ---------------------------------------------------------------------------------------
  // Number mode: a wide pad for a whole number; the reading, a chip per digit, and each
  // digit's box drawn over the pad.

  const numberMode = (function () {
    const mode = { root: document.getElementById("number-mode"), title: "digitrec: write a number",
                   intro: "Write a whole number, digits side by side, with your mouse, pen or finger, " +
                          "or drop a picture of one." };
    const frame = mode.root.querySelector(".line-frame");
    const boxesEl = document.getElementById("boxes");
    const numberEl = document.getElementById("number");
    const confidenceEl = document.getElementById("number-confidence");
    const statusEl = document.getElementById("number-status");
    const chipsEl = document.getElementById("chips");
    const readingEl = mode.root.querySelector(".reading");

    function clearReading(message) {
      numberEl.textContent = "\u2013";
      confidenceEl.textContent = message;
      statusEl.textContent = "";
      readingEl.classList.remove("unsure");
      chipsEl.replaceChildren();
      boxesEl.replaceChildren();
    }

    function chip(d, i) {
      const li = document.createElement("li");
      const digit = d.digit === null ? "?" : String(d.digit);
      li.className = "chip" + (d.unsure ? " unsure" : "");
      li.dataset.digit = digit;
      li.dataset.confidence = String(d.confidence);
      li.setAttribute("aria-label", "digit " + (i + 1) + ": " + digit + ", " + pct(d.confidence) +
                      (d.unsure ? ", unsure" : ""));
      li.innerHTML = '<span class="chip-digit"></span><span class="chip-pct"></span>';
      li.firstChild.textContent = digit + (d.unsure ? "?" : "");
      li.lastChild.textContent = pct(d.confidence);
      return li;
    }

    // Boxes are in the posted image's pixels: the overlay's viewBox is that image's size and
    // it is stretched over the pad, so they land on the digits however big the pad is shown.
    function drawBoxes(digits, size) {
      boxesEl.setAttribute("viewBox", "0 0 " + size.width + " " + size.height);
      const shapes = digits.map((d) => {
        const [x, y, w, h] = d.box;
        const g = document.createElementNS(SVG_NS, "g");
        g.setAttribute("class", "box" + (d.unsure ? " unsure" : ""));
        const rect = document.createElementNS(SVG_NS, "rect");
        for (const [k, v] of [["x", x], ["y", y], ["width", w], ["height", h], ["rx", 6]]) rect.setAttribute(k, v);
        const label = document.createElementNS(SVG_NS, "text");
        label.setAttribute("x", x + 4);
        label.setAttribute("y", y > 30 ? y - 6 : y + h + 26);
        label.textContent = d.digit === null ? "?" : String(d.digit);
        g.append(rect, label);
        return g;
      });
      boxesEl.replaceChildren(...shapes);
    }

    function showReading(body, size) {
      const found = body.number !== null;
      clearReading(found
        ? "Confidence " + pct(body.confidence) + (body.unsure ? " (unsure)" : "")
        : "No number found.");
      numberEl.textContent = found ? body.number : "\u2013";
      readingEl.classList.toggle("unsure", found && Boolean(body.unsure));
      chipsEl.replaceChildren(...body.digits.map(chip));
      if (size) drawBoxes(body.digits, size);
      setState(mode, "done");
    }

    function showError(message) {
      clearReading("");
      showStatus(mode, statusEl, message);
    }

    const client = makeClient(mode, "/v1/read", showReading, showError);
    const scheduler = makeScheduler(() => pad.toPng((blob, size) => client.send(blob, "image/png", size)),
                                    READ_DEBOUNCE_MS, 0);
    // A digit often takes several strokes: ask once the pen has stayed up a moment.
    const pad = makePad(document.getElementById("line-pad"), (phase) => {
      if (phase === "start") scheduler.cancel();
      else if (phase === "end") scheduler.soon();
    });

    // The canvas takes the shape the page gives the pad (wide on a desk, less so on a phone),
    // 280 px tall like the digit pad so strokes are as thick. Only an empty pad is reshaped.
    function fit() {
      const w = frame.clientWidth;
      const h = frame.clientHeight;
      if (!pad.empty || !w || !h) return;
      const width = Math.round(LINE_HEIGHT * w / h);
      if (width !== pad.canvas.width) pad.resize(width, LINE_HEIGHT);
      boxesEl.setAttribute("viewBox", "0 0 " + pad.canvas.width + " " + pad.canvas.height);
    }
    mode.shown = fit;
    window.addEventListener("resize", () => { if (mode === active) fit(); });

    mode.clear = function () {
      scheduler.cancel();
      client.cancel();
      pad.clear();
      fit();
      clearReading("Write a number to start.");
      setState(mode, "idle");
    };
    document.getElementById("line-clear").addEventListener("click", mode.clear);

    // A picture is put on the pad and the pad is read, so that the boxes fit what is shown
    // (and one can write over it). One the browser cannot decode goes to the server as is,
    // which says what is wrong with it.
    acceptFiles(document.getElementById("line-file"), document.getElementById("line-dropzone"), (file) => {
      if (file.type && !file.type.startsWith("image/")) {
        showError("That is not an image file.");
        return;
      }
      scheduler.cancel();
      openImage(file, (img) => {
        pad.showImage(img);
        scheduler.now();
      }, () => client.send(file, file.type));
    });

    pad.clear();
    clearReading("Write a number to start.");
    return mode;
  })();

  // ---------------------------------------------------------------------------------------
  // The mode switch (radio buttons: arrow keys move between them), remembered in the URL.

  const modes = { digit: digitMode, number: numberMode };
  const intro = document.getElementById("intro");
  function setMode(name) {
    const mode = modes[name] || digitMode;
    active = mode;
    for (const m of Object.values(modes)) m.root.hidden = m !== mode;
    document.body.dataset.mode = name;
    document.body.dataset.state = mode.root.dataset.state;
    document.getElementById("mode-" + name).checked = true;
    intro.textContent = mode.intro;
    document.title = mode.title;
    if (mode.shown) mode.shown();
  }
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      if (!radio.checked) return;
      setMode(radio.value);
      history.replaceState(null, "", radio.value === "number" ? "#number" : location.pathname + location.search);
    });
  }
  window.addEventListener("hashchange", () => setMode(location.hash === "#number" ? "number" : "digit"));

  document.addEventListener("keydown", (ev) => {
    // Escape clears, except in a field that might want it (the mode switch does not).
    if (ev.key === "Escape" && !ev.target.closest('input:not([type="radio"]), textarea')) active.clear();
  });

  setMode(location.hash === "#number" ? "number" : "digit");
})();
