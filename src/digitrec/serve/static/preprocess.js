// digitrec preprocessing in the browser: a port of to_mnist (src/digitrec/data/preprocess.py)
// for pictures on the page's drawing pad, step for step and in the same arithmetic (float32
// where NumPy and Pillow work in float32, float64 where they work in float64), so that the model
// sees the same 28x28 whichever side prepares it. What it cannot do exactly it refuses with an
// Unsupported error, and the page asks the server instead: a transparent pixel, a picture over
// WORK_SIZE, a 28x28 picture, and a small picture without ink (which Python reads as a grey crop).
// The constants are Python's, checked against preprocess.py by tests/test_serve_browser_local.py.
// The model's normalisation is not here: it is inside the ONNX graph the server hands out.
// Plain browser JavaScript (also loads in Node for tests), no third-party code.
"use strict";

(function (root) {
  const f32 = Math.fround;
  const CONSTANTS = Object.freeze({
    IMAGE_SIZE: 28, // side of the model input, pixels
    BOX_SIZE: 20, // side of the box the ink is fitted into, pixels
    WORK_SIZE: 1024, // Python shrinks larger pictures first (not ported: they go to the server)
    MIN_CONTRAST: 0.15, // ink must stand out from the paper by this much (0..1)
    SPECK_FRACTION: 0.05, // blobs under this fraction of the largest blob's area are dirt
    NOISE_MARGIN: 12.0, // ink must be this many noise standard deviations bright
    MIN_BLOB_PIXELS: 6, // the largest blob must have this many pixels
    TINY: 32, // pictures at most this many pixels on their shorter side are crops of one digit
    GREY_CROP_MAX: 160, // pictures up to this size without ink are retried as grey crops (server)
    HALF_MAD: 0.5926, // 1.4826 x the MAD of the lower half of normal noise, in standard deviations
  });

  class Unsupported extends Error {}

  // An image is { w, h, d }: d a Float32Array of w*h grey levels, row by row.
  const image = (w, h, d) => ({ w, h, d: d || new Float32Array(w * h) });

  // Python's round(): halves go to the even neighbour.
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // The k-th smallest of a (reordered in place): quickselect, O(n) where sorting is O(n log n).
  function select(a, k) {
    let lo = 0;
    let hi = a.length - 1;
    while (hi > lo) {
      const mid = (lo + hi) >> 1;
      const pivot = Math.max(Math.min(a[lo], a[mid]), Math.min(Math.max(a[lo], a[mid]), a[hi]));
      let i = lo;
      let j = hi;
      while (i <= j) {
        while (a[i] < pivot) i++;
        while (a[j] > pivot) j--;
        if (i <= j) {
          const t = a[i];
          a[i++] = a[j];
          a[j--] = t;
        }
      }
      if (k <= j) hi = j;
      else if (k >= i) lo = i;
      else return a[k];
    }
    return a[k];
  }
  // np.median of float32 values (float32 result), of float64 values (float64 result): the middle
  // value, or the mean of the two middle ones.
  function middle(a, mean) {
    const m = a.length >> 1;
    const upper = select(a, m);
    if (a.length % 2) return upper;
    let lower = a[0];
    for (let i = 1; i < m; i++) if (a[i] > lower) lower = a[i]; // select left the smaller half below m
    return mean(lower, upper);
  }
  const medianF32 = (values) => middle(Float32Array.from(values), (a, b) => f32(f32(a + b) / 2));
  const median64 = (values) => middle(Float64Array.from(values), (a, b) => (a + b) / 2);

  // np.percentile's default ("linear") method, in float64, for each of the quantiles qs.
  function percentiles(values, qs) {
    const a = Float64Array.from(values).sort();
    const n = a.length;
    const clamp = (i) => Math.min(Math.max(i, 0), n - 1);
    return qs.map((q) => {
      const p = q / 100;
      const virtual = n * p + (1 + p * (1 - 1 - 1)) - 1;
      const prev = Math.floor(virtual);
      const lo = a[clamp(prev)];
      const hi = a[clamp(prev + 1)];
      const t = virtual - prev;
      const diff = hi - lo;
      return t >= 0.5 ? hi - diff * (1 - t) : lo + diff * t;
    });
  }

  // NumPy's pairwise summation (what .sum() does on a contiguous array), in float32 or float64.
  function pairwise(a, lo, n, round) {
    if (n < 8) {
      let res = 0;
      for (let i = lo; i < lo + n; i++) res = round(res + a[i]);
      return res;
    }
    if (n <= 128) {
      const r = [];
      for (let j = 0; j < 8; j++) r.push(a[lo + j]);
      let i = 8;
      for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] = round(r[j] + a[lo + i + j]);
      let res = round(round(round(r[0] + r[1]) + round(r[2] + r[3])) +
                      round(round(r[4] + r[5]) + round(r[6] + r[7])));
      for (; i < n; i++) res = round(res + a[lo + i]);
      return res;
    }
    let n2 = Math.floor(n / 2);
    n2 -= n2 % 8;
    return round(pairwise(a, lo, n2, round) + pairwise(a, lo + n2, n - n2, round));
  }
  const sumF32 = (a) => f32(0 + pairwise(a, 0, a.length, f32));
  const sum64 = (a) => 0 + pairwise(a, 0, a.length, (x) => x);

  function border(img) {
    const { w, h, d } = img;
    const out = [];
    for (let x = 0; x < w; x++) out.push(d[x]);
    for (let x = 0; x < w; x++) out.push(d[(h - 1) * w + x]);
    for (let y = 0; y < h; y++) out.push(d[y * w]);
    for (let y = 0; y < h; y++) out.push(d[y * w + w - 1]);
    return out;
  }

  // ImageData (RGBA bytes) -> grey [0, 1] as Pillow's convert("L") makes it, then / 255.
  function grayFromRGBA(rgba, w, h) {
    const out = image(w, h);
    for (let i = 0; i < w * h; i++) {
      if (rgba[4 * i + 3] !== 255) throw new Unsupported("transparent pixels");
      const l = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >> 16;
      out.d[i] = f32(l / 255);
    }
    return out;
  }

  function toWhiteOnBlack(img) {
    const [low, high] = percentiles(img.d, [0.1, 99.9]);
    const middle = high - low > 1e-3 ? (low + high) / 2 : 0.5;
    const paper = Math.min(img.w, img.h) <= CONSTANTS.TINY ? img.d : border(img);
    if (!(medianF32(paper) > middle)) return img;
    return image(img.w, img.h, img.d.map((v) => f32(1 - v)));
  }

  // Least squares through the normal equations (the design is a well-conditioned quadratic).
  function leastSquares(rows, values) {
    const k = rows[0].length;
    const a = [];
    for (let i = 0; i < k; i++) {
      const row = new Float64Array(k + 1);
      for (let r = 0; r < rows.length; r++) {
        for (let j = 0; j < k; j++) row[j] += rows[r][i] * rows[r][j];
        row[k] += rows[r][i] * values[r];
      }
      a.push(row);
    }
    for (let c = 0; c < k; c++) {
      let p = c;
      for (let r = c + 1; r < k; r++) if (Math.abs(a[r][c]) > Math.abs(a[p][c])) p = r;
      if (Math.abs(a[p][c]) < 1e-9) throw new Unsupported("degenerate light surface");
      [a[c], a[p]] = [a[p], a[c]];
      for (let r = 0; r < k; r++) {
        if (r === c) continue;
        const f = a[r][c] / a[c][c];
        for (let j = c; j <= k; j++) a[r][j] -= f * a[c][j];
      }
    }
    return a.map((row, i) => row[k] / row[i]);
  }

  // preprocess._flatten: subtract a quadratic light surface fitted to the paper.
  function flatten(img, iterations = 4) {
    const { w, h, d } = img;
    const step = Math.max(1, Math.floor(Math.max(h, w) / 64));
    const sh = Math.ceil(h / step);
    const sw = Math.ceil(w / step);
    const design = [];
    const values = [];
    for (let r = 0; r < sh; r++) {
      for (let c = 0; c < sw; c++) {
        const y = r / Math.max(sh - 1, 1) - 0.5;
        const x = c / Math.max(sw - 1, 1) - 0.5;
        design.push([1, x, y, x * x, x * y, y * y]);
        values.push(d[r * step * w + c * step]);
      }
    }
    const [p60] = percentiles(values, [60]);
    let use = values.map((v) => v <= p60);
    let coef = [0, 0, 0, 0, 0, 0];
    for (let it = 0; it < iterations; it++) {
      const rows = design.filter((_, i) => use[i]);
      if (rows.length < 12) break;
      coef = leastSquares(rows, values.filter((_, i) => use[i]));
      const resid = values.map((v, i) => v - design[i].reduce((s, x, j) => s + x * coef[j], 0));
      const kept = resid.filter((_, i) => use[i]);
      const m = median64(kept);
      const spread = 1.4826 * median64(kept.map((v) => Math.abs(v - m))) + 1e-3;
      use = resid.map((v) => v < 2.5 * spread);
    }
    if (coef.every((c) => c === 0)) return img; // ink - 0 is ink: the usual case on clean paper
    const out = image(w, h);
    for (let y = 0; y < h; y++) {
      const fy = f32(f32(y / Math.max(h - 1, 1)) - 0.5);
      for (let x = 0; x < w; x++) {
        const fx = f32(f32(x / Math.max(w - 1, 1)) - 0.5);
        const surface = coef[0] + coef[1] * fx + coef[2] * fy + coef[3] * fx * fx + coef[4] * fx * fy +
                        coef[5] * fy * fy;
        out.d[y * w + x] = f32(d[y * w + x] - f32(surface));
      }
    }
    return out;
  }

  // Sliding minimum or maximum along one axis, edges extended (scipy's mode="nearest"): the
  // window of output i runs from i - before to i + after.
  function slide(img, size, isMin, before, horizontal) {
    const { w, h, d } = img;
    const out = image(w, h);
    const after = size - 1 - before;
    const lines = horizontal ? h : w;
    const n = horizontal ? w : h;
    const stride = horizontal ? 1 : w;
    const ext = new Float32Array(n + size - 1); // the line with its edges extended
    const queue = new Int32Array(n + size - 1); // positions whose values only get worse from the head
    for (let line = 0; line < lines; line++) {
      const base = horizontal ? line * w : line;
      for (let j = 0; j < ext.length; j++) ext[j] = d[base + Math.min(Math.max(j - before, 0), n - 1) * stride];
      let head = 0;
      let tail = 0;
      for (let j = 0; j < ext.length; j++) {
        const v = ext[j];
        if (isMin) while (tail > head && v <= ext[queue[tail - 1]]) tail--;
        else while (tail > head && v >= ext[queue[tail - 1]]) tail--;
        queue[tail++] = j;
        const i = j - before - after; // the output whose window ends at j
        if (i < 0) continue;
        while (queue[head] < i) head++;
        out.d[base + i * stride] = ext[queue[head]];
      }
    }
    return out;
  }
  // scipy's grey_erosion / grey_dilation with a flat size x size square: an even window sits
  // one pixel further left (up) for the erosion than for the dilation.
  const erode = (img, size) => slide(slide(img, size, true, size >> 1, false), size, true, size >> 1, true);
  const dilate = (img, size) => slide(slide(img, size, false, (size - 1) >> 1, false), size, false, (size - 1) >> 1, true);

  function removeBackground(ink) {
    const flat = Math.min(ink.w, ink.h) > CONSTANTS.TINY ? flatten(ink) : ink;
    const size = Math.max(3, Math.floor(Math.min(ink.w, ink.h) / 2));
    const opening = dilate(erode(flat, size), size);
    return image(flat.w, flat.h, flat.d.map((v, i) => Math.max(f32(v - opening.d[i]), 0)));
  }

  function medianFilter3(img) {
    const { w, h, d } = img;
    const out = image(w, h);
    const win = new Float32Array(9);
    for (let y = 0; y < h; y++) {
      const rows = [Math.max(y - 1, 0), y, Math.min(y + 1, h - 1)].map((r) => r * w);
      for (let x = 0; x < w; x++) {
        const cols = [Math.max(x - 1, 0), x, Math.min(x + 1, w - 1)];
        let k = 0;
        for (const r of rows) for (const c of cols) win[k++] = d[r + c];
        out.d[y * w + x] = select(win, 4);
      }
    }
    return out;
  }

  // preprocess.otsu_threshold, with np.histogram's float32 bins.
  function otsuThreshold(values, bins = 256) {
    let lo = values[0];
    let hi = values[0];
    for (const v of values) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo === hi) {
      lo = f32(lo - 0.5);
      hi = f32(hi + 0.5);
    }
    const step = f32(f32(hi - lo) / bins);
    const edges = new Float32Array(bins + 1);
    for (let i = 0; i <= bins; i++) edges[i] = f32(f32(i * step) + lo);
    edges[bins] = hi;
    const denom = f32(hi - lo);
    const hist = new Float64Array(bins);
    for (const v of values) {
      let i = Math.trunc(f32(f32(f32(v - lo) / denom) * bins));
      if (i === bins) i -= 1;
      if (v < edges[i]) i -= 1;
      if (v >= edges[i + 1] && i !== bins - 1) i += 1;
      hist[i] += 1;
    }
    const weightLow = new Float64Array(bins);
    const massLow = new Float64Array(bins);
    let w = 0;
    let m = 0;
    for (let i = 0; i < bins; i++) {
      w += hist[i];
      m += hist[i] * f32(f32(edges[i] + edges[i + 1]) / 2);
      weightLow[i] = w;
      massLow[i] = m;
    }
    let best = 0;
    let bestValue = -Infinity;
    for (let i = 0; i < bins; i++) {
      const weightHigh = w - weightLow[i];
      const meanLow = weightLow[i] > 0 ? massLow[i] / weightLow[i] : 0;
      const meanHigh = weightHigh > 0 ? (m - massLow[i]) / weightHigh : 0;
      const between = weightLow[i] * weightHigh * ((meanLow - meanHigh) * (meanLow - meanHigh));
      if (between > bestValue) {
        bestValue = between;
        best = i;
      }
    }
    return edges[best + 1];
  }

  // preprocess._keep_strokes (without the grey reader's height test): hysteresis on 8-connected blobs.
  function keepStrokes(ink, high, low, part) {
    const { w, h, d } = ink;
    const lowT = f32(low);
    const highT = f32(high);
    const labels = new Int32Array(w * h);
    const areas = [0];
    const peaks = [0];
    const stack = [];
    for (let start = 0; start < w * h; start++) {
      if (labels[start] || !(d[start] > lowT)) continue;
      const label = areas.length;
      let area = 0;
      let peak = -Infinity;
      labels[start] = label;
      stack.push(start);
      while (stack.length) {
        const p = stack.pop();
        area++;
        if (d[p] > peak) peak = d[p];
        const px = p % w;
        const py = (p - px) / w;
        for (let yy = Math.max(py - 1, 0); yy <= Math.min(py + 1, h - 1); yy++) {
          for (let xx = Math.max(px - 1, 0); xx <= Math.min(px + 1, w - 1); xx++) {
            const q = yy * w + xx;
            if (!labels[q] && d[q] > lowT) {
              labels[q] = label;
              stack.push(q);
            }
          }
        }
      }
      areas.push(area);
      peaks.push(peak);
    }
    let largest = -1;
    for (let l = 1; l < areas.length; l++) if (peaks[l] > highT && areas[l] > largest) largest = areas[l];
    if (largest < CONSTANTS.MIN_BLOB_PIXELS) return null; // also: no strong blob at all
    const keep = areas.map((a, l) => l > 0 && peaks[l] > highT && a >= part * largest);
    const strokes = [];
    for (let i = 0; i < w * h; i++) if (keep[labels[i]] && d[i] > highT) strokes.push(d[i]);
    const level = medianF32(strokes);
    const denom = f32(Math.max(level - low, 1e-6));
    const out = image(w, h);
    for (let i = 0; i < w * h; i++) {
      if (keep[labels[i]]) out.d[i] = Math.min(Math.max(f32(f32(d[i] - lowT) / denom), 0), 1);
    }
    return out;
  }

  function cleanInk(picture, speckFraction = CONSTANTS.SPECK_FRACTION) {
    const ink = Math.min(picture.w, picture.h) >= 64 ? medianFilter3(picture) : picture;
    const empty = image(ink.w, ink.h);
    let peak = -Infinity;
    for (const v of ink.d) if (v > peak) peak = v;
    const med = medianF32(ink.d);
    const back = ink.d.filter((v) => v <= med);
    const backMed = medianF32(back);
    const noise = 1.4826 * medianF32(back.map((v) => Math.abs(f32(v - backMed)))) / CONSTANTS.HALF_MAD;
    if (peak < Math.max(CONSTANTS.MIN_CONTRAST, CONSTANTS.NOISE_MARGIN * noise)) return empty;
    const floor = f32(0.02 * peak);
    const candidates = ink.d.filter((v) => v > floor);
    const high = Math.max(candidates.length ? otsuThreshold(candidates) : 0, CONSTANTS.MIN_CONTRAST / 2,
                          0.5 * CONSTANTS.NOISE_MARGIN * noise);
    const low = Math.max(high / 2, 0.25 * CONSTANTS.NOISE_MARGIN * noise);
    return keepStrokes(ink, high, low, speckFraction) || empty;
  }

  // The bounding box of the pixels above threshold, or null when there are none (no digit).
  function cropToInk(img, threshold) {
    const { w, h, d } = img;
    let top = h;
    let bottom = -1;
    let left = w;
    let right = -1;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (d[y * w + x] > threshold) {
          top = Math.min(top, y);
          bottom = Math.max(bottom, y);
          left = Math.min(left, x);
          right = Math.max(right, x);
        }
      }
    }
    if (bottom < 0) return null;
    const out = image(right - left + 1, bottom - top + 1);
    for (let y = top; y <= bottom; y++) out.d.set(d.subarray(y * w + left, y * w + right + 1), (y - top) * (right - left + 1));
    return out;
  }

  // Pillow's resampling of a mode "F" image (Resample.c): double coefficients and sums, float pixels.
  const FILTERS = {
    box: { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
    bicubic: {
      support: 2.0,
      f: (x) => {
        const a = -0.5;
        x = Math.abs(x);
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
      },
    },
  };
  function coefficients(inSize, outSize, filter) {
    const scale = inSize / outSize;
    const filterscale = Math.max(scale, 1);
    const support = filter.support * filterscale;
    const out = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const ss = 1 / filterscale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const k = [];
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        const v = filter.f((x + xmin - center + 0.5) * ss);
        k.push(v);
        ww += v;
      }
      out.push({ xmin, k: ww !== 0 ? k.map((v) => v / ww) : k });
    }
    return out;
  }
  function resizeAcross(img, w, filter) { // the horizontal pass
    if (w === img.w) return img;
    const co = coefficients(img.w, w, filter);
    const out = image(w, img.h);
    for (let y = 0; y < img.h; y++) {
      for (let x = 0; x < w; x++) {
        const { xmin, k } = co[x];
        let ss = 0;
        for (let i = 0; i < k.length; i++) ss += img.d[y * img.w + xmin + i] * k[i];
        out.d[y * w + x] = ss;
      }
    }
    return out;
  }
  function resizeDown(img, h, filter) { // the vertical pass
    if (h === img.h) return img;
    const co = coefficients(img.h, h, filter);
    const out = image(img.w, h);
    for (let y = 0; y < h; y++) {
      const { xmin, k } = co[y];
      for (let x = 0; x < img.w; x++) {
        let ss = 0;
        for (let i = 0; i < k.length; i++) ss += img.d[(xmin + i) * img.w + x] * k[i];
        out.d[y * img.w + x] = ss;
      }
    }
    return out;
  }
  // Pillow 13 runs the vertical pass first when it shrinks a picture more than twice as tall as
  // it is wide, else the horizontal one (found by comparing both orders with Pillow's output,
  // bit for bit); the order changes the float32 rounding of the pass in between.
  function resize(img, w, h, filter) {
    if (filter === FILTERS.box && img.h > 2 * img.w) return resizeAcross(resizeDown(img, h, filter), w, filter);
    return resizeDown(resizeAcross(img, w, filter), h, filter);
  }

  function fitInBox(img, box = CONSTANTS.BOX_SIZE) {
    const scale = box / Math.max(img.h, img.w);
    const w = Math.max(1, roundHalfEven(img.w * scale));
    const h = Math.max(1, roundHalfEven(img.h * scale));
    const out = resize(img, w, h, scale < 1 ? FILTERS.box : FILTERS.bicubic);
    return image(out.w, out.h, out.d.map((v) => Math.min(Math.max(v, 0), 1)));
  }

  function centerByMass(img, size = CONSTANTS.IMAGE_SIZE) {
    const { w, h, d } = img;
    const total = sumF32(d);
    let cy = (h - 1) / 2;
    let cx = (w - 1) / 2;
    if (total > 0) {
      const ys = new Float64Array(w * h);
      const xs = new Float64Array(w * h);
      for (let i = 0; i < w * h; i++) {
        ys[i] = Math.floor(i / w) * d[i];
        xs[i] = (i % w) * d[i];
      }
      cy = sum64(ys) / total;
      cx = sum64(xs) / total;
    }
    const top = Math.min(Math.max(roundHalfEven((size - 1) / 2 - cy), 0), size - h);
    const left = Math.min(Math.max(roundHalfEven((size - 1) / 2 - cx), 0), size - w);
    const out = new Float32Array(size * size);
    for (let y = 0; y < h; y++) out.set(d.subarray(y * w, (y + 1) * w), (top + y) * size + left);
    return out;
  }

  // A grey picture (white paper or black, any ink) -> the model's 28x28 float32 input, or null
  // when it holds no digit; throws Unsupported where only the server can answer exactly.
  function toMnist(gray) {
    const side = Math.max(gray.w, gray.h);
    if (gray.w === CONSTANTS.IMAGE_SIZE && gray.h === CONSTANTS.IMAGE_SIZE) throw new Unsupported("a 28x28 picture");
    if (side > CONSTANTS.WORK_SIZE) throw new Unsupported("a picture larger than the working size");
    const glyph = cropToInk(cleanInk(removeBackground(toWhiteOnBlack(gray))), 0);
    if (glyph === null) {
      if (side <= CONSTANTS.GREY_CROP_MAX) throw new Unsupported("a small picture read as a grey crop");
      return null;
    }
    return centerByMass(fitInBox(glyph));
  }

  // ImageData-like { data, width, height } -> toMnist's answer.
  function fromImageData(data) {
    return toMnist(grayFromRGBA(data.data, data.width, data.height));
  }

  const api = { CONSTANTS, Unsupported, toMnist, fromImageData, grayFromRGBA, roundHalfEven };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.DigitrecPreprocess = api;
})(typeof window === "object" ? window : globalThis);
