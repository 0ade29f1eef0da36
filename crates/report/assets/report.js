// saepipe report: draws each figure's plotted numbers (a <script type="application/json"
// class="chart-spec"> next to the static SVG) as an interactive chart. Hover shows exact
// values, dragging a box zooms (double-click or "reset zoom" undoes it), clicking a
// legend entry hides or shows that series. No network, no libraries: with scripts off
// the static SVG stays as it is.
(function () {
  "use strict";

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(v, int) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (int) return String(Math.round(v));
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e6 || a < 1e-3) return v.toExponential(3).replace(/\.?0+e/, "e");
    return String(parseFloat(v.toPrecision(5)));
  }
  var FWD = {
    linear: function (v) { return v; },
    log: function (v) { return v > 0 ? Math.log10(v) : NaN; },
    symlog: function (v) { return v >= 0 ? Math.log10(1 + v) : NaN; }
  };
  var INV = {
    linear: function (t) { return t; },
    log: function (t) { return Math.pow(10, t); },
    symlog: function (t) { return Math.pow(10, t) - 1; }
  };
  function niceStep(raw) {
    var p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  // Tick positions in transformed units, with labels in data units.
  function ticks(axis, lo, hi) {
    var out = [], t, k;
    if (axis.scale === "linear") {
      var step = niceStep((hi - lo) / 5 || 1);
      if (axis.int) step = Math.max(1, Math.round(step));
      for (k = Math.ceil(lo / step); k * step <= hi + 1e-9 * step; k++) out.push(k * step);
      return out.map(function (v) { return [v, fmt(v, axis.int)]; });
    }
    if (axis.scale === "symlog" && lo <= 0) out.push([0, "0"]);
    var d0 = Math.floor(axis.scale === "symlog" ? Math.max(lo, 0) : lo), d1 = Math.ceil(hi);
    var few = hi - lo < 2.2;
    for (var d = d0; d <= d1; d++) {
      [1, 2, 5].forEach(function (m) {
        if (m !== 1 && !few) return;
        var v = m * Math.pow(10, d);
        t = FWD[axis.scale](v);
        if (t >= lo && t <= hi) out.push([t, fmt(v, axis.int)]);
      });
    }
    if (out.length > 9) out = out.filter(function (_, i) { return i % 2 === 0; });
    return out;
  }
  function tooltip(host) {
    var tip = document.createElement("div");
    tip.className = "chart-tip";
    tip.hidden = true;
    host.appendChild(tip);
    return {
      show: function (html, x, y) {
        tip.innerHTML = html;
        tip.hidden = false;
        var w = host.clientWidth;
        tip.style.left = Math.min(x + 14, w - tip.offsetWidth - 4) + "px";
        tip.style.top = y + 14 + "px";
      },
      hide: function () { tip.hidden = true; },
      el: tip
    };
  }
  function svgOpen(w, h) {
    return '<svg class="chart-svg" width="' + w + '" height="' + h + '" viewBox="0 0 ' + w + " " + h + '">';
  }
  function localXY(svg, ev) {
    var r = svg.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  // ---- line charts ---------------------------------------------------------------
  var M = { l: 66, r: 14, t: 30, b: 44 };

  function LineChart(host, spec) {
    this.host = host;
    this.spec = spec;
    this.uid = LineChart.count = (LineChart.count || 0) + 1;
    this.hidden = {};
    this.zoom = spec.panels.map(function () { return null; });
    var names = [], colors = {};
    spec.panels.forEach(function (p) {
      p.series.forEach(function (s) {
        if (names.indexOf(s.name) < 0) { names.push(s.name); colors[s.name] = s.color; }
      });
    });
    var bar = document.createElement("div");
    bar.className = "chart-bar";
    var self = this;
    if (names.length > 1) {
      names.forEach(function (n) {
        var b = document.createElement("button");
        b.type = "button";
        b.className = "chart-legend";
        b.setAttribute("aria-pressed", "true");
        b.innerHTML = '<span class="sw" style="background:' + esc(colors[n]) + '"></span>' + esc(n);
        b.addEventListener("click", function () {
          self.hidden[n] = !self.hidden[n];
          b.setAttribute("aria-pressed", self.hidden[n] ? "false" : "true");
          self.draw();
        });
        bar.appendChild(b);
      });
    }
    var reset = document.createElement("button");
    reset.type = "button";
    reset.className = "chart-reset";
    reset.textContent = "reset zoom";
    reset.addEventListener("click", function () { self.resetZoom(); });
    bar.appendChild(reset);
    host.appendChild(bar);
    if (spec.note) {
      var note = document.createElement("p");
      note.className = "chart-note";
      note.textContent = spec.note;
      host.appendChild(note);
    }
    this.grid = document.createElement("div");
    this.grid.className = "chart-grid";
    this.grid.style.gridTemplateColumns = "repeat(" + spec.cols + ", 1fr)";
    host.appendChild(this.grid);
    this.tip = tooltip(host);
    this.draw();
  }
  LineChart.prototype.resetZoom = function () {
    this.zoom = this.zoom.map(function () { return null; });
    this.draw();
  };
  LineChart.prototype.visible = function (p) {
    var h = this.hidden;
    return p.series.filter(function (s) { return !h[s.name]; });
  };
  LineChart.prototype.domain = function (i) {
    if (this.zoom[i]) return this.zoom[i];
    var p = this.spec.panels[i], fx = FWD[p.x.scale], fy = FWD[p.y.scale];
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    this.visible(p).forEach(function (s) {
      s.points.forEach(function (pt) {
        var x = fx(pt[0]), y = fy(pt[1]);
        if (pt[0] === null || pt[1] === null || !isFinite(x) || !isFinite(y)) return;
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      });
    });
    if (!isFinite(x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 - x0 < 1e-12) { x0 -= 0.5; x1 += 0.5; }
    if (y1 - y0 < 1e-9 * Math.max(1, Math.abs(y1))) { var d = Math.abs(y1) * 0.01 || 0.5; y0 -= d; y1 += d; }
    var px = (x1 - x0) * 0.04, py = (y1 - y0) * 0.06;
    return [x0 - px, x1 + px, y0 - py, y1 + py];
  };
  LineChart.prototype.draw = function () {
    var self = this, spec = this.spec;
    var W = Math.max(260, Math.floor((this.host.clientWidth || 900) / spec.cols) - 8);
    var H = spec.panels.length > spec.cols ? 260 : spec.cols === 1 ? 400 : 300;
    this.grid.innerHTML = "";
    spec.panels.forEach(function (p, i) {
      var cell = document.createElement("div");
      cell.className = "chart-panel";
      cell.innerHTML = self.panelSvg(p, i, W, H);
      self.grid.appendChild(cell);
      self.bind(cell.firstChild, p, i, W, H);
    });
  };
  LineChart.prototype.panelSvg = function (p, i, W, H) {
    var dom = this.domain(i), fx = FWD[p.x.scale], fy = FWD[p.y.scale];
    var pw = W - M.l - M.r, ph = H - M.t - M.b;
    var sx = function (t) { return M.l + (t - dom[0]) / (dom[1] - dom[0]) * pw; };
    var sy = function (t) { return M.t + ph - (t - dom[2]) / (dom[3] - dom[2]) * ph; };
    var o = [svgOpen(W, H)];
    o.push('<text class="ct" x="' + W / 2 + '" y="18" text-anchor="middle">' + esc(p.title || "") + "</text>");
    o.push('<rect class="frame" x="' + M.l + '" y="' + M.t + '" width="' + pw + '" height="' + ph + '"/>');
    ticks(p.x, dom[0], dom[1]).forEach(function (t) {
      var x = sx(t[0]).toFixed(1);
      o.push('<line class="grid" x1="' + x + '" x2="' + x + '" y1="' + M.t + '" y2="' + (M.t + ph) + '"/>');
      o.push('<text class="tick" x="' + x + '" y="' + (M.t + ph + 15) + '" text-anchor="middle">' + esc(t[1]) + "</text>");
    });
    ticks(p.y, dom[2], dom[3]).forEach(function (t) {
      var y = sy(t[0]).toFixed(1);
      o.push('<line class="grid" x1="' + M.l + '" x2="' + (M.l + pw) + '" y1="' + y + '" y2="' + y + '"/>');
      o.push('<text class="tick" x="' + (M.l - 5) + '" y="' + y + '" dy="4" text-anchor="end">' + esc(t[1]) + "</text>");
    });
    var xl = p.x.label + (p.x.scale !== "linear" ? " (log scale)" : "");
    var yl = p.y.label.replace(" (log)", "") + (p.y.scale !== "linear" ? " (log)" : "");
    o.push('<text class="al" x="' + (M.l + pw / 2) + '" y="' + (H - 6) + '" text-anchor="middle">' + esc(xl) + "</text>");
    o.push('<text class="al" transform="translate(13 ' + (M.t + ph / 2) + ') rotate(-90)" text-anchor="middle">' + esc(yl) + "</text>");
    o.push('<clipPath id="clip-' + this.uid + "-" + i + '"><rect x="' + M.l + '" y="' + M.t + '" width="' + pw + '" height="' + ph + '"/></clipPath>');
    o.push('<g clip-path="url(#clip-' + this.uid + "-" + i + ')">');
    this.visible(p).forEach(function (s) {
      var segs = [], cur = [];
      s.points.forEach(function (pt) {
        var x = pt[0] === null ? NaN : fx(pt[0]), y = pt[1] === null ? NaN : fy(pt[1]);
        if (isFinite(x) && isFinite(y)) cur.push(sx(x).toFixed(1) + "," + sy(y).toFixed(1));
        else if (cur.length) { segs.push(cur); cur = []; }
      });
      if (cur.length) segs.push(cur);
      if (s.mode !== "markers") {
        segs.forEach(function (seg) {
          o.push('<polyline class="series" data-series="' + esc(s.name) + '" points="' + seg.join(" ") + '" stroke="' + esc(s.color) + '"' + (s.dash ? ' stroke-dasharray="7 4"' : "") + "/>");
        });
      }
      if (s.mode !== "line") {
        segs.forEach(function (seg) {
          seg.forEach(function (xy) {
            var c = xy.split(",");
            o.push('<circle class="pt" cx="' + c[0] + '" cy="' + c[1] + '" r="3.5" fill="' + esc(s.color) + '"/>');
          });
        });
      }
    });
    o.push("</g>");
    o.push('<circle class="hl" r="6" cx="-99" cy="-99"/>');
    o.push('<rect class="zoombox" x="0" y="0" width="0" height="0" visibility="hidden"/>');
    o.push("</svg>");
    this.geom = this.geom || [];
    this.geom[i] = { dom: dom, sx: sx, sy: sy, pw: pw, ph: ph };
    return o.join("");
  };
  LineChart.prototype.bind = function (svg, p, i, W, H) {
    var self = this, g = this.geom[i], fx = FWD[p.x.scale], fy = FWD[p.y.scale];
    var hl = svg.querySelector(".hl"), box = svg.querySelector(".zoombox"), drag = null;
    function nearest(mx, my) {
      var best = null, bd = 30 * 30;
      self.visible(p).forEach(function (s) {
        s.points.forEach(function (pt) {
          if (pt[0] === null || pt[1] === null) return;
          var x = g.sx(fx(pt[0])), y = g.sy(fy(pt[1]));
          if (!isFinite(x) || !isFinite(y)) return;
          var d = (x - mx) * (x - mx) + (y - my) * (y - my);
          if (d < bd) { bd = d; best = { s: s, pt: pt, x: x, y: y }; }
        });
      });
      return best;
    }
    this.pick = this.pick || [];
    this.pick[i] = nearest;
    svg.addEventListener("mousemove", function (ev) {
      var m = localXY(svg, ev);
      if (drag) {
        var x = Math.min(drag[0], m[0]), y = Math.min(drag[1], m[1]);
        box.setAttribute("x", x); box.setAttribute("y", y);
        box.setAttribute("width", Math.abs(m[0] - drag[0])); box.setAttribute("height", Math.abs(m[1] - drag[1]));
        box.setAttribute("visibility", "visible");
        return;
      }
      var b = nearest(m[0], m[1]);
      if (!b) { hl.setAttribute("cx", -99); self.tip.hide(); return; }
      hl.setAttribute("cx", b.x); hl.setAttribute("cy", b.y); hl.setAttribute("stroke", b.s.color);
      var hr = self.host.getBoundingClientRect();
      self.tip.show("<b>" + esc(b.s.name) + "</b><br>" + esc(p.x.label.replace(/ \(.*\)$/, "")) + ": " + fmt(b.pt[0], p.x.int) +
        "<br>" + esc(p.y.label.replace(/ \(log.*\)$/, "")) + ": " + fmt(b.pt[1], p.y.int), ev.clientX - hr.left, ev.clientY - hr.top);
    });
    svg.addEventListener("mouseleave", function () { hl.setAttribute("cx", -99); self.tip.hide(); drag = null; box.setAttribute("visibility", "hidden"); });
    svg.addEventListener("mousedown", function (ev) { ev.preventDefault(); drag = localXY(svg, ev); });
    svg.addEventListener("mouseup", function (ev) {
      if (!drag) return;
      var m = localXY(svg, ev), d = drag;
      drag = null;
      box.setAttribute("visibility", "hidden");
      if (Math.abs(m[0] - d[0]) < 6 || Math.abs(m[1] - d[1]) < 6) return;
      var tx = function (px) { return g.dom[0] + (px - M.l) / g.pw * (g.dom[1] - g.dom[0]); };
      var ty = function (py) { return g.dom[2] + (M.t + g.ph - py) / g.ph * (g.dom[3] - g.dom[2]); };
      self.zoom[i] = [tx(Math.min(d[0], m[0])), tx(Math.max(d[0], m[0])), ty(Math.max(d[1], m[1])), ty(Math.min(d[1], m[1]))];
      self.tip.hide();
      self.draw();
    });
    svg.addEventListener("dblclick", function () { self.resetZoom(); });
    void W; void H;
  };

  // ---- heat map ------------------------------------------------------------------
  function lerpColor(stops, t) {
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    var i = Math.min(Math.floor(t), stops.length - 2), f = t - i;
    var a = parseInt(stops[i].slice(1), 16), b = parseInt(stops[i + 1].slice(1), 16);
    var ch = function (s) { return Math.round(((a >> s) & 255) * (1 - f) + ((b >> s) & 255) * f); };
    return "rgb(" + ch(16) + "," + ch(8) + "," + ch(0) + ")";
  }
  function Heatmap(host, spec) {
    var W = Math.max(420, (host.clientWidth || 900) - 8), H = 420, m = { l: 66, r: 90, t: 14, b: 48 };
    var pw = W - m.l - m.r, ph = H - m.t - m.b, nx = spec.x_labels.length, e = spec.y_edges, ny = e.length - 1;
    var cw = pw / nx, ch = ph / ny, o = [svgOpen(W, H)];
    var color = function (v) { return v === null ? "#e4e4e4" : lerpColor(spec.colors, spec.sqrt ? Math.sqrt(v / spec.vmax) : v / spec.vmax); };
    spec.values.forEach(function (col, i) {
      col.forEach(function (v, b) {
        o.push('<rect class="cell" data-i="' + i + '" data-b="' + b + '" x="' + (m.l + i * cw).toFixed(2) + '" y="' + (m.t + ph - (b + 1) * ch).toFixed(2) + '" width="' + (cw + 0.4).toFixed(2) + '" height="' + (ch + 0.4).toFixed(2) + '" fill="' + color(v) + '"/>');
      });
    });
    o.push('<rect class="frame" x="' + m.l + '" y="' + m.t + '" width="' + pw + '" height="' + ph + '"/>');
    var every = Math.ceil(nx / Math.max(2, Math.floor(pw / 56)));
    spec.x_labels.forEach(function (l, i) {
      if ((i % every || nx - 1 - i < every) && i !== nx - 1 && i !== 0) return;
      o.push('<text class="tick" x="' + (m.l + (i + 0.5) * cw).toFixed(1) + '" y="' + (m.t + ph + 15) + '" text-anchor="middle">' + esc(l) + "</text>");
    });
    var ystep = (e[ny] - e[0]) > 0.6 ? 0.1 : 0.05;
    for (var v = Math.ceil(e[0] / ystep - 1e-9) * ystep; v <= e[ny] + 1e-9; v += ystep) {
      var y = m.t + ph - (v - e[0]) / (e[ny] - e[0]) * ph;
      o.push('<text class="tick" x="' + (m.l - 5) + '" y="' + y.toFixed(1) + '" dy="4" text-anchor="end">' + fmt(Math.round(v * 100) / 100) + "</text>");
    }
    for (var k = 0; k < 32; k++) {
      o.push('<rect x="' + (W - m.r + 16) + '" y="' + (m.t + ph - (k + 1) * ph / 32).toFixed(2) + '" width="16" height="' + (ph / 32 + 0.5).toFixed(2) + '" fill="' + lerpColor(spec.colors, (k + 0.5) / 32) + '"/>');
    }
    [0, 0.25, 0.5, 0.75, 1].forEach(function (t) {
      var val = spec.sqrt ? t * t * spec.vmax : t * spec.vmax;
      o.push('<text class="tick" x="' + (W - m.r + 36) + '" y="' + (m.t + ph - t * ph).toFixed(1) + '" dy="4">' + fmt(parseFloat(val.toPrecision(2))) + "</text>");
    });
    o.push('<text class="al" x="' + (m.l + pw / 2) + '" y="' + (H - 8) + '" text-anchor="middle">' + esc(spec.x_label) + "</text>");
    o.push('<text class="al" transform="translate(13 ' + (m.t + ph / 2) + ') rotate(-90)" text-anchor="middle">' + esc(spec.y_label) + "</text>");
    o.push("</svg>");
    var wrap = document.createElement("div");
    wrap.className = "chart-panel";
    wrap.innerHTML = o.join("");
    host.appendChild(wrap);
    var note = document.createElement("p");
    note.className = "chart-note";
    note.textContent = "Colour: " + spec.value_label + " (square-root scale). Hover a cell for its numbers.";
    host.appendChild(note);
    var tip = tooltip(host), svg = wrap.firstChild;
    svg.addEventListener("mousemove", function (ev) {
      var t = ev.target;
      if (!t.classList || !t.classList.contains("cell")) { tip.hide(); return; }
      var i = +t.getAttribute("data-i"), b = +t.getAttribute("data-b"), hr = host.getBoundingClientRect();
      tip.show("step <b>" + esc(spec.x_labels[i]) + "</b><br>similarity " + fmt(e[b]) + " – " + fmt(e[b + 1]) +
        "<br>" + esc(spec.value_label) + ": " + fmt(spec.values[i][b]) + "<br>features in bin: " + spec.counts[i][b] +
        "<br>dead or unassigned: " + spec.unmatched[i], ev.clientX - hr.left, ev.clientY - hr.top);
    });
    svg.addEventListener("mouseleave", function () { tip.hide(); });
  }

  // ---- ridgeline (feature density) -----------------------------------------------
  function Ridgeline(host, spec) {
    var rowH = 44, m = { l: 190, r: 16, t: 8, b: 44 }, n = spec.rows.length;
    var W = Math.max(420, (host.clientWidth || 900) - 8), H = m.t + m.b + rowH * (n + 0.3);
    var pw = W - m.l - m.r, e = spec.edges, lo = e[0], hi = e[e.length - 1];
    var sx = function (v) { return m.l + (v - lo) / (hi - lo) * pw; };
    var o = [svgOpen(W, H)];
    for (var d = Math.ceil(lo); d <= hi; d++) {
      o.push('<line class="grid" x1="' + sx(d) + '" x2="' + sx(d) + '" y1="' + m.t + '" y2="' + (H - m.b) + '"/>');
      o.push('<text class="tick" x="' + sx(d) + '" y="' + (H - m.b + 15) + '" text-anchor="middle">' + (d === 0 ? "1" : "1e" + d) + "</text>");
    }
    spec.rows.forEach(function (r, i) {
      var base = m.t + rowH * (i + 1.3), max = Math.max.apply(null, r.counts.concat([1]));
      var pts = [sx(lo).toFixed(1) + "," + base];
      r.counts.forEach(function (c, b) {
        var y = (base - c / max * rowH * 1.25).toFixed(1);
        pts.push(sx(e[b]).toFixed(1) + "," + y, sx(e[b + 1]).toFixed(1) + "," + y);
      });
      pts.push(sx(hi).toFixed(1) + "," + base);
      o.push('<polygon class="ridge" data-row="' + i + '" points="' + pts.join(" ") + '" fill="' + esc(r.color) + '" stroke="' + esc(r.color) + '"/>');
      o.push('<line class="base" x1="' + m.l + '" x2="' + (m.l + pw) + '" y1="' + base + '" y2="' + base + '"/>');
      o.push('<text class="tick" x="' + (m.l - 6) + '" y="' + (base - 4) + '" text-anchor="end">' + esc(r.name) + "</text>");
      if (r.dead > 0) o.push('<text class="tick dead" x="' + (m.l - 6) + '" y="' + (base + 9) + '" text-anchor="end">' + r.dead + " of " + r.n + " dead</text>");
    });
    o.push('<text class="al" x="' + (m.l + pw / 2) + '" y="' + (H - 8) + '" text-anchor="middle">' + esc(spec.x_label) + " (log scale)</text>");
    o.push("</svg>");
    var wrap = document.createElement("div");
    wrap.className = "chart-panel";
    wrap.innerHTML = o.join("");
    host.appendChild(wrap);
    var note = document.createElement("p");
    note.className = "chart-note";
    note.textContent = "One row per coder, each scaled to its own tallest bin; hover for counts.";
    host.appendChild(note);
    var tip = tooltip(host), svg = wrap.firstChild;
    svg.addEventListener("mousemove", function (ev) {
      var xy = localXY(svg, ev), row = Math.floor((xy[1] - m.t - rowH * 0.3) / rowH);
      var v = lo + (xy[0] - m.l) / pw * (hi - lo), b = Math.floor((v - lo) / (e[1] - e[0]));
      if (row < 0 || row >= n || b < 0 || b >= e.length - 1) { tip.hide(); return; }
      var r = spec.rows[row], hr = host.getBoundingClientRect();
      tip.show("<b>" + esc(r.name) + "</b><br>firing frequency " + fmt(Math.pow(10, e[b])) + " – " + fmt(Math.pow(10, e[b + 1])) +
        "<br>features: " + r.counts[b] + " of " + r.n + (r.dead ? " (" + r.dead + " dead)" : ""), ev.clientX - hr.left, ev.clientY - hr.top);
    });
    svg.addEventListener("mouseleave", function () { tip.hide(); });
  }

  // ---- wiring --------------------------------------------------------------------
  var KINDS = { lines: LineChart, heatmap: Heatmap, ridgeline: Ridgeline };
  var charts = [];
  function init() {
    var specs = document.querySelectorAll("script.chart-spec");
    for (var k = 0; k < specs.length; k++) {
      var el = specs[k], fig = el.closest("figure"), spec = JSON.parse(el.textContent);
      var host = document.createElement("div");
      host.className = "chart";
      fig.insertBefore(host, fig.firstChild);
      var Kind = KINDS[spec.kind];
      if (!Kind) continue;
      var c = new Kind(host, spec);
      charts.push({ kind: spec.kind, host: host, chart: c });
      fig.classList.add("live");
      var b = document.createElement("button");
      b.type = "button";
      b.className = "chart-static";
      b.textContent = "static figure";
      b.addEventListener("click", (function (f, btn) {
        return function () {
          var s = f.classList.toggle("show-static");
          btn.textContent = s ? "interactive figure" : "static figure";
        };
      })(fig, b));
      fig.querySelector("figcaption").appendChild(b);
    }
    document.body.setAttribute("data-charts", String(charts.length));
    document.body.setAttribute("data-interactive", "ready");
    if (location.hash === "#selftest") selftest();
  }

  // Drives the charts as a user would (hover, legend click, box zoom, reset) and
  // records the outcome on <body data-selftest>; the browser test reads it.
  function selftest() {
    var fails = [];
    // Mouse positions are whole pixels: returns where the event really lands.
    function mouse(el, type, x, y) {
      var r = el.getBoundingClientRect(), cx = Math.round(r.left + x), cy = Math.round(r.top + y);
      el.dispatchEvent(new MouseEvent(type, { bubbles: true, clientX: cx, clientY: cy }));
      return [cx - r.left, cy - r.top];
    }
    charts.forEach(function (c, n) {
      var svg = c.host.querySelector("svg");
      var tip = c.host.querySelector(".chart-tip");
      if (c.kind === "lines") {
        var ch = c.chart, g = ch.geom[0], p = ch.spec.panels[0], s = ch.visible(p)[0];
        var pt = s.points.filter(function (q) { return q[0] !== null && q[1] !== null; })[0];
        var at = mouse(svg, "mousemove", g.sx(FWD[p.x.scale](pt[0])), g.sy(FWD[p.y.scale](pt[1])));
        var want = ch.pick[0](at[0], at[1]);
        if (!want || tip.hidden || tip.textContent.indexOf(fmt(want.pt[1], p.y.int)) < 0) fails.push(n + ": hover shows no value");
        var before = c.host.querySelectorAll("polyline, circle.pt").length;
        var leg = c.host.querySelector(".chart-legend");
        if (leg) {
          leg.click();
          if (c.host.querySelectorAll("polyline, circle.pt").length >= before) fails.push(n + ": legend click hid nothing");
          leg.click();
        }
        svg = c.host.querySelector("svg");
        var d0 = ch.domain(0).slice();
        mouse(svg, "mousedown", M.l + 10, M.t + 10);
        mouse(svg, "mousemove", M.l + 90, M.t + 80);
        mouse(svg, "mouseup", M.l + 90, M.t + 80);
        if (!ch.zoom[0] || !(ch.zoom[0][1] - ch.zoom[0][0] < d0[1] - d0[0])) fails.push(n + ": box zoom did not zoom");
        ch.resetZoom();
        if (ch.zoom[0]) fails.push(n + ": reset did not reset");
      } else if (c.kind === "heatmap") {
        var cell = svg.querySelector("rect.cell");
        var r = cell.getBoundingClientRect(), sr = svg.getBoundingClientRect();
        var ev = new MouseEvent("mousemove", { bubbles: true, clientX: r.left + 1, clientY: r.top + 1 });
        cell.dispatchEvent(ev);
        if (tip.hidden || tip.textContent.indexOf("features in bin") < 0) fails.push(n + ": heat map hover shows nothing");
        void sr;
      }
    });
    document.body.setAttribute("data-selftest", fails.length ? "fail: " + fails.join("; ") : "ok");
    if (fails.length) console.error("selftest: " + fails.join("; "));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
