/* Open-data portal: dataset maps (Leaflet, GSI tiles), a URL name suggested from the title, a filter for
   long lists. Pages work without it; it only adds to them. */
(function () {
  "use strict";

  var STYLE = { color: "#0b5cad", weight: 3, opacity: 0.85, fillOpacity: 0.15 };
  var COVERAGE = { color: "#c0392b", weight: 2, dashArray: "6 4", fill: false, interactive: false };

  function popup(props) {
    var box = document.createElement("div");
    if (props.title) {
      var head = document.createElement("strong");
      head.textContent = props.title;
      box.appendChild(head);
    }
    var cells = props.cells || [];
    if (cells.length) {
      var table = document.createElement("table");
      table.className = "od-popup";
      cells.forEach(function (cell) {
        var tr = document.createElement("tr");
        var th = document.createElement("th");
        var td = document.createElement("td");
        th.textContent = cell[0];
        td.textContent = cell[1];
        tr.appendChild(th);
        tr.appendChild(td);
        table.appendChild(tr);
      });
      box.appendChild(table);
    }
    return box;
  }

  function initMap(el) {
    if (typeof L === "undefined") { return; }
    var data = JSON.parse(document.getElementById(el.dataset.features).textContent);
    var map = L.map(el, { scrollWheelZoom: false })
      .setView([Number(el.dataset.lat), Number(el.dataset.lon)], Number(el.dataset.zoom));
    L.tileLayer(el.dataset.tiles, { attribution: el.dataset.attribution, maxZoom: 18, minZoom: 5 }).addTo(map);
    var layer = L.geoJSON(data, {
      style: function (f) { return (f.properties || {})._coverage ? COVERAGE : STYLE; },
      pointToLayer: function (f, latlng) {
        return L.circleMarker(latlng, { radius: 7, color: "#fff", weight: 2, fillColor: "#0b5cad", fillOpacity: 0.9 });
      },
      onEachFeature: function (f, lyr) {
        var props = f.properties || {};
        if (!props._coverage) { lyr.bindPopup(popup(props)); }
      }
    }).addTo(map);
    var bounds = layer.getBounds();
    if (bounds.isValid()) { map.fitBounds(bounds, { padding: [24, 24], maxZoom: 15 }); }
    el.s5map = map;
    el.dataset.ready = "1";
  }

  function slug(text) {
    return text.normalize("NFKC").toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/-+/g, "-")
      .replace(/^-|-$/g, "").slice(0, 100);
  }

  function suggestName(title, name) {
    if (!title || !name || name.readOnly) { return; }
    var suggested = name.value;
    var touched = false;
    name.addEventListener("input", function () { touched = true; });
    title.addEventListener("input", function () {
      if (touched) { return; }
      var s = slug(title.value);
      // A Japanese title has no letters to keep: the suggestion from the server stays.
      name.value = s.length >= 3 ? s : suggested;
    });
  }

  function filterList(input) {
    var list = document.getElementById(input.dataset.filterList);
    if (!list) { return; }
    input.addEventListener("input", function () {
      var q = input.value.normalize("NFKC").toLowerCase().trim();
      list.querySelectorAll("li").forEach(function (li) {
        li.hidden = q !== "" && (li.dataset.text || "").normalize("NFKC").toLowerCase().indexOf(q) < 0;
      });
    });
  }

  document.querySelectorAll("[data-od-map]").forEach(initMap);
  suggestName(document.getElementById("f-title"), document.getElementById("f-name"));
  document.querySelectorAll("input[data-filter-list]").forEach(filterList);
})();
