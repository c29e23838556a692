/* geomodel's map layers, inlined into every map that demo/maps.py renders.
 *
 * The data come JSON-encoded from Python with every string already HTML-escaped there; this code
 * only joins those strings, fixed labels and numbers into markup. Nothing here reads user text
 * from anywhere else, and messages from the parent page only ever select a point by its index.
 */
var GM = (function () {
  "use strict";

  function num(x) {  // demo.colours._number / demo.maps._fmt_number
    var a = Math.abs(x);
    if (a >= 1000) return Math.round(x).toLocaleString("en-US");
    if (a < 10) return String(Number(x.toPrecision(3)));
    return x.toFixed(1);
  }

  function coords(d, a, b) {
    return d.frame === "wgs84" ? a.toFixed(5) + ", " + b.toFixed(5)
      : String(Number(a.toPrecision(6))) + ", " + String(Number(b.toPrecision(6)));
  }

  function text(d, i) { return i >= 0 ? d.strings[i] : "\u2014"; }

  // A point: [name, lat, lon, region, true_lat, true_lon, true_region, error, line_colour, extra]
  function popup(d, p) {
    var axes = d.frame === "wgs84" ? "lat, lon" : "y, x", w = d.words;
    var rows = [[w.region, text(d, p[3])], [w.coords + " (" + axes + ")", coords(d, p[1], p[2])]];
    var truth = p[4] !== null;
    if (truth || p[6] >= 0) rows.push(["True region", text(d, p[6])]);
    if (truth) rows.push(["True (" + axes + ")", coords(d, p[4], p[5])]);
    if (p[7] !== null) rows.push(["Error", (num(p[7]) + " " + d.unit).trim()]);
    if (p[3] >= 0 && p[6] >= 0) rows.push(["Region correct", p[3] === p[6] ? "yes" : "no"]);
    var x = p[9] || {};
    (x.rows || []).forEach(function (r) { rows.push(r); });
    var body = rows.map(function (r) { return "<tr><th>" + r[0] + "</th><td>" + r[1] + "</td></tr>"; }).join("");
    var thumb = x.thumb ? '<img class="gm-thumb" src="' + x.thumb + '" alt="">' : "";
    return '<div class="gm-popup">' + thumb + '<div class="gm-name">' + p[0] + "</div><table>" + body +
      "</table></div>";
  }

  var PRED = {radius: 6, color: "#ffffff", weight: 1, fill: true, fillOpacity: 0.9};

  function circle(lat, lon, colour, cls) {
    var o = {};
    for (var k in PRED) o[k] = PRED[k];
    o.fillColor = colour;
    o.className = cls;
    return L.circleMarker([lat, lon], o);
  }

  function Map(map, d) {
    this.map = map;
    this.d = d;
    this.markers = [];
    this.fillLayers = [];
    this.selected = -1;
  }

  Map.prototype.points = function (g) {
    var self = this, d = this.d;
    d.pts.forEach(function (p, i) {
      var open = function () { return popup(d, p); };
      if (p[4] !== null) {
        g.lines.addLayer(L.polyline([[p[1], p[2]], [p[4], p[5]]],
          {color: d.colours[p[8]], weight: 2.5, opacity: 0.85, className: "gm-line"}));
        var t = circle(p[4], p[5], d.trueColour, "gm-truth");
        t.bindPopup(open, {maxWidth: 320});
        t.bindTooltip(p[0] + " (truth)", {sticky: true});
        g.truth.addLayer(t);
      }
      var m = circle(p[1], p[2], (p[9] && p[9].colour) || d.predColour, "gm-pred");
      m.bindPopup(open, {maxWidth: 320});
      m.bindTooltip(p[0], {sticky: true});
      m.on("click", function () { self.select(i); });
      g.preds.addLayer(m);
      self.markers.push(m);
    });
  };

  // Region layer for fill k (k < 0: outlines only), drawn in the "gm_regions" pane under the points.
  Map.prototype.regions = function (k) {
    var r = this.d.regions, f = k >= 0 ? r.fills[k] : null, self = this;
    var layer = L.geoJSON(r.geojson, {
      pane: "gm_regions",
      style: function (feat) {
        var i = feat.properties.i;
        return {color: "#333333", weight: 1.5, opacity: 0.9, fillColor: f ? f.colours[i] : "#000000",
                fillOpacity: f ? 0.55 : 0, className: "gm-region"};
      },
      onEachFeature: function (feat, lyr) {
        var i = feat.properties.i;
        lyr.bindTooltip(function () {
          return r.names[i] + (f ? ": " + (f.texts[i]) : "");
        }, {sticky: true});
        if (f && f.popups) lyr.bindPopup(f.popups[i], {maxWidth: 360});
      }
    });
    layer.gmFill = k;
    if (f) this.fillLayers[k] = layer;
    return layer;
  };

  Map.prototype.labels = function () {
    var r = this.d.regions, group = L.layerGroup();
    r.labels.forEach(function (at, i) {
      group.addLayer(L.marker(at, {interactive: false, keyboard: false, icon: L.divIcon(
        {className: "gm-region-label", html: "<span>" + r.names[i] + "</span>", iconSize: null})}));
    });
    return group;
  };

  // Show point i's own region values (e.g. its predicted probabilities) in the following fill.
  Map.prototype.select = function (i) {
    var d = this.d, r = d.regions;
    if (!r || r.follow < 0 || !(i >= 0 && i < d.pts.length)) return;
    var own = (d.pts[i][9] || {}).fill;
    if (!own) return;
    var f = r.fills[r.follow];
    f.colours = own.colours;
    f.texts = own.texts;
    var layer = this.fillLayers[r.follow];
    if (layer) {
      layer.eachLayer(function (lyr) { lyr.setStyle({fillColor: f.colours[lyr.feature.properties.i]}); });
    }
    if (this.selected >= 0) this.markers[this.selected].setStyle({color: "#ffffff", weight: 1}).setRadius(6);
    this.markers[i].setStyle({color: "#000000", weight: 2.5}).setRadius(8);
    this.selected = i;
    var label = document.getElementById("gm-follow-name");
    if (label) label.innerHTML = d.pts[i][0];
    document.body.setAttribute("data-gm-selected", String(i));
  };

  Map.prototype.finish = function (initial) {
    var self = this, map = this.map;
    function legends() {
      self.fillLayers.forEach(function (layer, k) {
        var el = document.getElementById("gm-fill-" + k);
        if (el) el.style.display = map.hasLayer(layer) ? "" : "none";
      });
    }
    map.on("baselayerchange overlayadd overlayremove", legends);
    legends();
    window.addEventListener("message", function (e) {
      if (e.source !== window.parent || !e.data || typeof e.data.gmSelect !== "number") return;
      self.select(e.data.gmSelect);
    });
    if (initial >= 0) this.select(initial);
  };

  return {Map: Map, popup: popup};
})();
