/* society5 web shell: Leaflet maps of GeoJSON features, and "search this map area". No dependencies but Leaflet. */
(function () {
  "use strict";

  var STYLE = { color: "#0b5cad", weight: 4, opacity: 0.85, fillOpacity: 0.2 };

  function popup(props) {
    var box = document.createElement("div");
    var link = document.createElement("a");
    link.href = props.url;
    link.textContent = props.name || props.id;
    box.appendChild(link);
    var type = document.createElement("div");
    type.className = "popup-type";
    type.textContent = props.type + (props.name ? " · " + props.id : "");
    box.appendChild(type);
    return box;
  }

  function bboxBounds(text) {
    var v = (text || "").split(",").map(Number);
    if (v.length !== 4 || v.some(isNaN)) { return null; }
    return L.latLngBounds([v[1], v[0]], [v[3], v[2]]);
  }

  function initMap(el) {
    if (typeof L === "undefined") { return null; }
    var data = JSON.parse(document.getElementById(el.dataset.features).textContent);
    var map = L.map(el, { scrollWheelZoom: false })
      .setView([Number(el.dataset.lat), Number(el.dataset.lon)], Number(el.dataset.zoom));
    L.tileLayer(el.dataset.tiles, { attribution: el.dataset.attribution, maxZoom: 18, minZoom: 5 }).addTo(map);
    var layer = L.geoJSON(data, {
      style: function () { return STYLE; },
      onEachFeature: function (feature, lyr) { lyr.bindPopup(popup(feature.properties || {})); }
    }).addTo(map);
    var area = bboxBounds(el.dataset.bbox);
    if (area) {
      L.rectangle(area, { color: "#c0392b", weight: 2, dashArray: "6 4", fill: false, interactive: false })
        .addTo(map);
    }
    var bounds = layer.getBounds();
    if (bounds.isValid()) {
      map.fitBounds(bounds, { padding: [24, 24], maxZoom: 15 });
    } else if (area) {
      map.fitBounds(area);
    }
    el.s5map = map;
    el.dataset.ready = "1";
    return map;
  }

  function round(x) { return Math.round(x * 1e6) / 1e6; }

  function clamp(x, lo, hi) { return Math.min(hi, Math.max(lo, x)); }

  function areaSearch(button) {
    var el = document.getElementById(button.dataset.map);
    var form = button.form || document.getElementById("search-form");
    if (!el || !el.s5map || !form) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var b = el.s5map.getBounds();
      var west = clamp(b.getWest(), -180, 180), east = clamp(b.getEast(), -180, 180);
      var south = clamp(b.getSouth(), -90, 90), north = clamp(b.getNorth(), -90, 90);
      form.elements.bbox.value = [west, south, east, north].map(round).join(",");
      form.submit();
    });
  }

  document.querySelectorAll("[data-s5-map]").forEach(initMap);
  var areaButton = document.getElementById("btn-area");
  if (areaButton) { areaSearch(areaButton); }
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      var form = select.form;
      if (form.elements.type) { form.elements.type.value = ""; }
      if (form.elements.bbox) { form.elements.bbox.value = ""; }
      form.submit();
    });
  });
})();
