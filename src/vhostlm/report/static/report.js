/* Draws each case's timeline: an overview of the whole run and a zoom on the switch-over. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("vhostlm-data").textContent);
  var FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var BOLD = "600 12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var COL = {
    area: "rgba(37,99,235,0.35)", line: "#1e3a8a", grid: "#eef0f3", axis: "#9ca3af",
    text: "#374151", muted: "#6b7280", active: "rgba(245,158,11,0.13)",
    window: "rgba(124,58,237,0.75)", outage: "rgba(220,38,38,0.22)", outageText: "#b91c1c"
  };
  var MARKS = [
    ["migrate", "migrate", "#6b7280"], ["setup", "setup", "#6b7280"],
    ["active", "active", "#b45309"], ["stop", "STOP", "#6d28d9"],
    ["resume", "RESUME", "#6d28d9"], ["ready", "ready", "#0369a1"],
    ["announce", "announce", "#15803d"],
    ["completed", "completed", "#0f766e"]
  ];
  var MAX_BINS = 20000000, LABEL_ROW = 15, LABEL_ROWS = 3;

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

  function niceStep(span, target) {
    var raw = span / Math.max(1, target), p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  function decimals(step) { return Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)); }

  /* Replies counted into bins of binMs (1 ms unless the run is very long). */
  function prepare(tl) {
    var replies = tl.reply_ms || [], marks = tl.marks_ms || {}, span = num(tl.span_ms) || 0;
    if (replies.length) { span = Math.max(span, replies[replies.length - 1]); }
    Object.keys(marks).forEach(function (k) {
      if (num(marks[k]) !== null) { span = Math.max(span, marks[k]); }
    });
    if (tl.outage) { span = Math.max(span, tl.outage[1]); }
    span = Math.max(span * 1.01, 10);
    var binMs = Math.max(1, Math.ceil(span / MAX_BINS)), nbins = Math.ceil(span / binMs) + 1;
    var counts = new Uint32Array(nbins), plotted = 0;
    for (var k = 0; k < replies.length; k++) {
      var i = Math.floor(replies[k] / binMs);
      if (i >= 0 && i < nbins) { counts[i]++; plotted++; }
    }
    return { tl: tl, marks: marks, span: span, binMs: binMs, counts: counts, plotted: plotted };
  }

  /* Mean and max replies per ms in each pixel column of [x0, x1). */
  function aggregate(p, x0, x1, cols) {
    var mean = new Float32Array(cols), max = new Float32Array(cols), per = (x1 - x0) / cols;
    for (var c = 0; c < cols; c++) {
      var a = x0 + c * per, i0 = Math.floor(a / p.binMs);
      var i1 = Math.max(i0 + 1, Math.floor((a + per) / p.binMs)), s = 0, m = 0;
      for (var i = i0; i < i1; i++) {
        var v = i >= 0 && i < p.counts.length ? p.counts[i] : 0;
        s += v; if (v > m) { m = v; }
      }
      mean[c] = s / (i1 - i0) / p.binMs; max[c] = m / p.binMs;
    }
    return { mean: mean, max: max, perCol: per };
  }

  /* The switch-over window to zoom on, or null when no STOP/RESUME/outage is known. */
  function zoomRange(p) {
    var m = p.marks, lo = [], hi = [];
    if (num(m.stop) !== null) { lo.push(m.stop); hi.push(m.stop); }
    if (num(m.resume) !== null) { lo.push(m.resume); hi.push(m.resume); }
    if (p.tl.outage) { lo.push(p.tl.outage[0]); hi.push(p.tl.outage[1]); }
    if (!lo.length) { return null; }
    if (num(m.announce) !== null) { hi.push(m.announce); }
    var a = Math.min.apply(null, lo), b = Math.max.apply(null, hi);
    var pad = Math.max(40, (b - a) * 0.8);
    return [Math.max(0, a - pad), Math.min(p.span, b + pad)];
  }

  function shade(ctx, box, xOf, a, b, color, minW, band) {
    if (num(a) === null || num(b) === null) { return; }
    var xa = xOf(a), xb = xOf(b);
    if (xb - xa < minW) { var mid = (xa + xb) / 2; xa = mid - minW / 2; xb = mid + minW / 2; }
    xa = Math.max(box.x, xa); xb = Math.min(box.x + box.w, xb);
    if (xb <= xa) { return; }
    ctx.fillStyle = color; ctx.fillRect(xa, box.y, xb - xa, band || box.h);
  }

  /* Marks closer than a few pixels share one label; labels stack in rows above the plot. */
  function drawMarks(ctx, box, xOf, marks) {
    var groups = [];
    MARKS.forEach(function (d) {
      var t = num(marks[d[0]]);
      if (t === null) { return; }
      var x = xOf(t);
      if (x < box.x - 0.5 || x > box.x + box.w + 0.5) { return; }
      groups.push({ x: x, names: [d[1]], color: d[2] });
    });
    groups.sort(function (a, b) { return a.x - b.x; });
    var merged = [];
    groups.forEach(function (g) {
      var last = merged[merged.length - 1];
      if (last && g.x - last.x < 5) { last.names.push(g.names[0]); } else { merged.push(g); }
    });
    ctx.font = FONT;
    var rowEnd = [];
    merged.forEach(function (g) {
      ctx.strokeStyle = g.color; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(Math.round(g.x) + 0.5, box.y);
      ctx.lineTo(Math.round(g.x) + 0.5, box.y + box.h); ctx.stroke(); ctx.setLineDash([]);
      var text = g.names.join(" · "), w = ctx.measureText(text).width;
      var left = Math.min(Math.max(g.x - w / 2, box.x - 40), box.x + box.w + 10 - w);
      var row = 0;
      while (row < LABEL_ROWS - 1 && rowEnd[row] !== undefined && rowEnd[row] > left - 8) { row++; }
      rowEnd[row] = Math.max(rowEnd[row] || -1e9, left + w);
      var ty = box.y - 6 - (LABEL_ROWS - 1 - row) * LABEL_ROW;
      ctx.strokeStyle = g.color; ctx.globalAlpha = 0.5;
      var gx = Math.round(g.x) + 0.5;
      ctx.beginPath(); ctx.moveTo(gx, ty + 2); ctx.lineTo(gx, box.y); ctx.stroke();
      ctx.globalAlpha = 1;
      ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(left - 2, ty - 11, w + 4, 14);
      ctx.fillStyle = g.color; ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
      ctx.fillText(text, left, ty);
    });
  }

  function drawAxes(ctx, box, x0, x1, ymax, xTitle) {
    ctx.font = FONT; ctx.fillStyle = COL.muted; ctx.strokeStyle = COL.grid; ctx.lineWidth = 1;
    var ystep = niceStep(ymax, 4);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (var v = 0; v <= ymax + 1e-9; v += ystep) {
      var y = Math.round(box.y + box.h - v / ymax * box.h) + 0.5;
      ctx.beginPath(); ctx.moveTo(box.x, y); ctx.lineTo(box.x + box.w, y); ctx.stroke();
      ctx.fillText(String(+v.toFixed(decimals(ystep))), box.x - 6, y);
    }
    var spanS = (x1 - x0) / 1000, xstep = niceStep(spanS, box.w / 110), d = decimals(xstep);
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (var s = Math.ceil(x0 / 1000 / xstep) * xstep; s <= x1 / 1000 + 1e-9; s += xstep) {
      var x = Math.round(box.x + (s * 1000 - x0) / (x1 - x0) * box.w) + 0.5;
      ctx.strokeStyle = COL.axis; ctx.beginPath();
      ctx.moveTo(x, box.y + box.h); ctx.lineTo(x, box.y + box.h + 4); ctx.stroke();
      ctx.fillText(s.toFixed(d) + " s", x, box.y + box.h + 6);
    }
    ctx.strokeStyle = COL.axis; ctx.beginPath();
    var base = box.y + box.h + 0.5;
    ctx.moveTo(box.x, base); ctx.lineTo(box.x + box.w, base); ctx.stroke();
    ctx.save(); ctx.translate(14, box.y + box.h / 2); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.fillText("replies / ms", 0, 0);
    ctx.restore();
    if (xTitle) {
      ctx.textAlign = "center"; ctx.textBaseline = "top";
      ctx.fillText(xTitle, box.x + box.w / 2, box.y + box.h + 22);
    }
  }

  function drawPanel(ctx, p, box, x0, x1, title, xTitle, showMax) {
    var xOf = function (t) { return box.x + (t - x0) / (x1 - x0) * box.w; };
    var cols = Math.max(1, Math.floor(box.w)), agg = aggregate(p, x0, x1, cols), m = p.marks;
    var top = 0;
    for (var c = 0; c < cols; c++) { top = Math.max(top, showMax ? agg.max[c] : agg.mean[c]); }
    var want = Math.max(top, 1) * 1.15, ystep = niceStep(want, 4);
    var ymax = ystep * Math.ceil(want / ystep), ty = box.y - LABEL_ROWS * LABEL_ROW - 14;
    ctx.font = BOLD; ctx.fillStyle = COL.text; ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic"; ctx.fillText(title, box.x - 44, ty);
    ctx.font = FONT; ctx.fillStyle = COL.muted; ctx.textAlign = "right";
    var res = agg.perCol >= 1 ? "1 px = " + (+agg.perCol.toFixed(1)) + " ms"
      : "1 ms = " + (+(1 / agg.perCol).toFixed(1)) + " px";
    ctx.fillText(res, box.x + box.w, ty);
    shade(ctx, box, xOf, num(m.active) !== null ? m.active : m.setup, m.completed, COL.active, 0);
    if (p.tl.outage) { shade(ctx, box, xOf, p.tl.outage[0], p.tl.outage[1], COL.outage, 3); }
    shade(ctx, box, xOf, m.stop, m.resume, COL.window, 2, 8);
    drawAxes(ctx, box, x0, x1, ymax, xTitle);
    ctx.save(); ctx.beginPath(); ctx.rect(box.x, box.y, box.w, box.h); ctx.clip();
    var yOf = function (v) { return box.y + box.h - v / ymax * box.h; };
    ctx.beginPath(); ctx.moveTo(box.x, box.y + box.h);
    for (c = 0; c < cols; c++) {
      var y = yOf(agg.mean[c]);
      ctx.lineTo(box.x + c, y); ctx.lineTo(box.x + c + 1, y);
    }
    ctx.lineTo(box.x + cols, box.y + box.h); ctx.closePath(); ctx.fillStyle = COL.area; ctx.fill();
    ctx.beginPath();
    var series = showMax ? agg.max : agg.mean;
    for (c = 0; c < cols; c++) {
      var ym = yOf(series[c]);
      if (c === 0) { ctx.moveTo(box.x, ym); } else { ctx.lineTo(box.x + c, ym); }
      ctx.lineTo(box.x + c + 1, ym);
    }
    ctx.strokeStyle = COL.line; ctx.lineWidth = 1; ctx.stroke();
    ctx.restore();
    drawMarks(ctx, box, xOf, m);
    if (p.tl.outage && num(p.tl.outage_ms) !== null) {
      var xa = xOf(p.tl.outage[0]), xb = xOf(p.tl.outage[1]);
      var label = "outage " + (+p.tl.outage_ms.toFixed(1)) + " ms";
      ctx.font = BOLD; var w = ctx.measureText(label).width;
      var lx = Math.min(Math.max((xa + xb) / 2 + 8, box.x + 4), box.x + box.w - w - 4);
      ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(lx - 3, box.y + 12, w + 6, 16);
      ctx.fillStyle = COL.outageText; ctx.textAlign = "left"; ctx.textBaseline = "top";
      ctx.fillText(label, lx, box.y + 14);
    }
  }

  function draw(canvas, p) {
    var zoom = zoomRange(p), head = 28 + LABEL_ROWS * LABEL_ROW, foot = 28;
    var overviewH = 170, zoomH = 150, gap = 26;
    var height = head + overviewH + foot + (zoom ? gap + head + zoomH + foot + 14 : 10);
    canvas.style.height = height + "px";
    var width = Math.max(320, canvas.clientWidth || 800), dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, width, height);
    var left = 60, right = 16, w = width - left - right;
    var box = { x: left, y: head, w: w, h: overviewH };
    drawPanel(ctx, p, box, 0, p.span, "Whole run", zoom ? "" : "time since the first probe", true);
    if (zoom) {
      var y2 = head + overviewH + foot + gap;
      ctx.strokeStyle = "#cbd5e1"; ctx.setLineDash([2, 3]); ctx.beginPath();
      var za = left + zoom[0] / p.span * w, zb = left + zoom[1] / p.span * w;
      ctx.moveTo(za, head + overviewH + 20); ctx.lineTo(left, y2 - 4);
      ctx.moveTo(zb, head + overviewH + 20); ctx.lineTo(left + w, y2 - 4);
      ctx.stroke(); ctx.setLineDash([]);
      drawPanel(ctx, p, { x: left, y: y2 + head, w: w, h: zoomH }, zoom[0], zoom[1],
        "Switch-over (zoom)", "time since the first probe", false);
    }
    return p.plotted;
  }

  var prepared = [];
  function drawAll() {
    var canvases = document.querySelectorAll("canvas.timeline");
    for (var i = 0; i < canvases.length; i++) {
      var canvas = canvases[i], index = +canvas.getAttribute("data-case");
      var entry = DATA.cases[index];
      if (!entry || !entry.timeline) { continue; }
      var started = performance.now();
      if (!prepared[index]) { prepared[index] = prepare(entry.timeline); }
      canvas.setAttribute("data-drawn", String(draw(canvas, prepared[index])));
      canvas.setAttribute("data-draw-ms", (performance.now() - started).toFixed(1));
    }
  }
  drawAll();
  var pending = 0;
  window.addEventListener("resize", function () {
    cancelAnimationFrame(pending); pending = requestAnimationFrame(drawAll);
  });
  document.documentElement.setAttribute("data-report-ready", "yes");
})();
