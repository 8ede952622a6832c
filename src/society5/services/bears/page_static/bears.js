/* society5 bears pages: the sighting map, picking a place on a map, the report and sign-up forms, the staff
   console's buttons. Plain scripts over Leaflet; every word comes from the page (#bears-texts). */
(function () {
  "use strict";

  var T = JSON.parse((document.getElementById("bears-texts") || {}).textContent || "{}");
  var COLORS = { sighting: "#d35400", trace: "#8e5b2b", damage: "#8e44ad", injury: "#b00020" };
  var DAY = 86400000;

  function text(key, values) {
    var s = T[key] || key;
    Object.keys(values || {}).forEach(function (k) { s = s.replace("{" + k + "}", values[k]); });
    return s;
  }

  function jst(iso) {  // "YYYY-MM-DD HH:MM" in Japan time (no daylight saving there)
    var d = new Date(new Date(iso).getTime() + 9 * 3600000);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) + " " +
      two(d.getUTCHours()) + ":" + two(d.getUTCMinutes());
  }

  function baseMap(el) {
    var map = L.map(el, { scrollWheelZoom: false, tap: true })
      .setView([Number(el.dataset.lat), Number(el.dataset.lon)], Number(el.dataset.zoom));
    L.tileLayer(el.dataset.tiles, { attribution: el.dataset.attribution, maxZoom: 18, minZoom: 5 }).addTo(map);
    el.s5map = map;
    return map;
  }

  function show(el, message) {
    if (!el) { return; }
    el.textContent = message || "";
    el.hidden = !message;
  }

  function errorDetail(response, body) {
    if (body && body.error && body.error.detail) { return body.error.detail; }
    if (body && body.detail) { return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); }
    return text("failed") + " (" + response.status + ")";
  }

  function send(url, options) {  // resolves to {ok, status, body}; rejects only when the network fails
    return fetch(url, Object.assign({ credentials: "same-origin" }, options)).then(function (r) {
      return r.text().then(function (raw) {
        var body = null;
        try { body = raw ? JSON.parse(raw) : null; } catch (e) { body = null; }
        return { ok: r.ok, status: r.status, body: body, response: r };
      });
    });
  }

  function locate(callback, status) {
    if (!navigator.geolocation) { show(status, text("gps_unavailable")); return; }
    show(status, text("gps_wait"));
    navigator.geolocation.getCurrentPosition(function (pos) {
      show(status, text("gps_ok", { m: Math.round(pos.coords.accuracy || 0) }));
      callback(pos.coords);
    }, function () { show(status, text("gps_denied")); }, { enableHighAccuracy: true, timeout: 15000 });
  }

  // -- the public map ------------------------------------------------------------------------------------------
  function popup(p) {
    var box = document.createElement("div");
    var head = document.createElement("strong");
    head.textContent = (T["kind_" + p.kind] || p.kind) + " · " + (T["state_" + p.state] || p.state);
    box.appendChild(head);
    [jst(p.observed_at),
     [p.municipality_name, p.area_name].filter(Boolean).join(" "),
     p.count + " " + text("bears") + (p.cubs ? " (" + text("cubs") + " " + p.cubs + ")" : "") + " · " +
       (T["behaviour_" + p.behaviour] || p.behaviour || "") + " · " + (T["source_" + p.source] || p.source || "")
    ].forEach(function (line) {
      var div = document.createElement("div");
      div.textContent = line;
      box.appendChild(div);
    });
    return box;
  }

  function style(p, now, strongDays, periodDays) {
    var age = (now - new Date(p.observed_at).getTime()) / DAY;
    var opacity = 0.85;
    if (age > strongDays) {  // older sightings fade towards the end of the chosen period
      var span = Math.max(1, periodDays - strongDays);
      opacity = Math.max(0.15, 0.5 - 0.35 * Math.min(1, (age - strongDays) / span));
    }
    var unverified = p.state !== "verified";
    return {
      radius: age > strongDays ? 7 : 10, color: COLORS[p.kind] || "#d35400", weight: unverified ? 2 : 3,
      dashArray: unverified ? "4 3" : null, fillColor: COLORS[p.kind] || "#d35400", fillOpacity: opacity,
      opacity: Math.min(1, opacity + 0.15),
      className: "bear-marker state-" + p.state + (age > strongDays ? " older" : " recent")
    };
  }

  function publicMap(el) {
    var map = baseMap(el);
    var markers = {};
    var now = Date.now();
    var strong = Number(el.dataset.strongDays || 7), period = Number(el.dataset.periodDays || 30);
    function focus(id, scroll) {
      var m = markers[id];
      if (!m) { return false; }
      map.setView(m.getLatLng(), Math.max(map.getZoom(), 14));
      m.openPopup();
      if (scroll) { el.scrollIntoView({ behavior: "smooth", block: "center" }); }
      return true;
    }
    send(el.dataset.geojson).then(function (res) {
      if (!res.ok || !res.body) { throw new Error("load"); }
      var group = L.featureGroup();
      (res.body.features || []).forEach(function (f) {
        if (!f.geometry) { return; }
        var c = f.geometry.coordinates, p = f.properties || {};
        var m = L.circleMarker([c[1], c[0]], style(p, now, strong, period)).bindPopup(popup(p));
        markers[f.id] = m;
        group.addLayer(m);
      });
      group.addTo(map);
      if (!(el.dataset.focus && focus(el.dataset.focus, false)) && group.getLayers().length) {
        map.fitBounds(group.getBounds(), { padding: [24, 24], maxZoom: 13 });
      }
      el.dataset.markers = String(group.getLayers().length);
      el.dataset.ready = "1";
    }).catch(function () {
      var note = document.createElement("p");
      note.className = "notice notice-error";
      note.setAttribute("role", "alert");
      note.textContent = text("load_failed");
      el.parentNode.insertBefore(note, el.nextSibling);
      el.dataset.ready = "error";
    });
    document.querySelectorAll("a.show-on-map").forEach(function (a) {
      a.addEventListener("click", function (ev) { if (focus(a.dataset.id, true)) { ev.preventDefault(); } });
    });
    var button = document.getElementById("btn-locate");
    if (button && navigator.geolocation) {
      var here = null;
      button.hidden = false;
      button.addEventListener("click", function () {
        locate(function (c) {
          if (here) { map.removeLayer(here); }
          here = L.circle([c.latitude, c.longitude], { radius: Math.max(30, c.accuracy || 0), color: "#0b5cad" })
            .bindTooltip(text("here")).addTo(map);
          map.setView([c.latitude, c.longitude], 13);
        }, null);
      });
    }
  }

  // -- picking a place (report, sign-up) -----------------------------------------------------------------------
  function pickMap(el) {
    var map = baseMap(el);
    var lat = document.getElementById("f-lat"), lon = document.getElementById("f-lon");
    var accuracy = document.getElementById("f-accuracy");
    var marker = null;
    function put(la, lo, zoom) {
      if (marker) { marker.setLatLng([la, lo]); } else {
        marker = L.marker([la, lo], { title: text("picked"), keyboard: false }).addTo(map);
      }
      if (zoom) { map.setView([la, lo], Math.max(map.getZoom(), zoom)); }
    }
    map.on("click", function (ev) {
      lat.value = ev.latlng.lat.toFixed(6);
      lon.value = ev.latlng.lng.toFixed(6);
      if (accuracy) { accuracy.value = ""; }
      put(ev.latlng.lat, ev.latlng.lng, 0);
      el.dataset.picked = "1";
    });
    function typed() {
      var la = parseFloat(lat.value), lo = parseFloat(lon.value);
      if (!isNaN(la) && !isNaN(lo)) { put(la, lo, 13); }
    }
    lat.addEventListener("change", typed);
    lon.addEventListener("change", typed);
    typed();
    var button = document.getElementById("btn-gps");
    if (button && navigator.geolocation) {
      button.hidden = false;
      button.addEventListener("click", function () {
        locate(function (c) {
          lat.value = c.latitude.toFixed(6);
          lon.value = c.longitude.toFixed(6);
          if (accuracy) { accuracy.value = String(Math.round(c.accuracy || 0)); }
          put(c.latitude, c.longitude, 15);
        }, document.getElementById("gps-status"));
      });
    }
    el.dataset.ready = "1";
  }

  function reportForm(form) {
    var error = document.getElementById("report-error"), button = document.getElementById("btn-send");
    var kind = document.getElementById("f-kind"), trace = document.getElementById("trace-label");
    function traceShown() { trace.hidden = kind.value !== "trace"; }
    kind.addEventListener("change", traceShown);
    traceShown();
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (!form.elements.lat.value || !form.elements.lon.value) { show(error, text("need_place")); return; }
      show(error, "");
      button.disabled = true;
      button.textContent = text("sending");
      var data = new FormData(form);
      if (kind.value !== "trace") { data.delete("trace"); }
      send(form.dataset.api, { method: "POST", body: data }).then(function (res) {
        if (res.status === 201) {
          form.hidden = true;
          document.querySelectorAll(".lead").forEach(function (p) { p.hidden = true; });
          document.getElementById("done-map").href = "/bears/?focus=" + encodeURIComponent(res.body.id);
          var done = document.getElementById("report-done");
          done.hidden = false;
          done.scrollIntoView({ block: "start" });
        } else {
          show(error, errorDetail(res, res.body));
          error.scrollIntoView({ block: "center" });
        }
      }, function () { show(error, text("network")); }).then(function () {
        button.disabled = false;
        button.textContent = button.dataset.label;
      });
    });
    button.dataset.label = button.textContent;
  }

  function subscribeForm(form) {
    var ok = document.getElementById("subscribe-result"), error = document.getElementById("subscribe-error");
    var pointBox = document.getElementById("area-point"), muniBox = document.getElementById("area-municipality");
    function areaShown() {
      var point = form.elements.area_type.value === "point";
      pointBox.hidden = !point;
      muniBox.hidden = point;
      if (point) { var m = document.getElementById("subscribe-map"); if (m.s5map) { m.s5map.invalidateSize(); } }
    }
    form.querySelectorAll("input[name=area_type]").forEach(function (r) { r.addEventListener("change", areaShown); });
    areaShown();
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      show(ok, "");
      var f = form.elements, body = { email: f.email.value.trim(), language: document.documentElement.lang };
      if (!body.email) { show(error, text("need_email")); return; }
      if (f.area_type.value === "point") {
        if (!f.lat.value || !f.lon.value) { show(error, text("need_place")); return; }
        body.lat = Number(f.lat.value);
        body.lon = Number(f.lon.value);
        body.radius_m = Number(f.radius_m.value);
      } else {
        body.municipality = f.municipality.value;
      }
      show(error, "");
      send(form.dataset.api, { method: "POST", headers: { "Content-Type": "application/json" },
                               body: JSON.stringify(body) }).then(function (res) {
        if (res.ok) {
          show(ok, (res.body && res.body.message) || text("subscribed"));
          form.reset();
          areaShown();
        } else {
          show(error, errorDetail(res, res.body));
        }
      }, function () { show(error, text("network")); });
    });
  }

  // -- the staff console ---------------------------------------------------------------------------------------
  function console_(box) {
    var status = document.getElementById("console-status");
    var headers = { "Content-Type": "application/json", "NGSILD-Tenant": box.dataset.tenant };
    box.querySelectorAll("button[data-verify]").forEach(function (b) {
      b.addEventListener("click", function () {
        var row = b.closest("tr");
        row.querySelectorAll("button").forEach(function (x) { x.disabled = true; });
        send("/bears/sightings/" + encodeURIComponent(b.dataset.id) + "/verify",
             { method: "POST", headers: headers, body: JSON.stringify({ state: b.dataset.verify }) })
          .then(function (res) {
            if (!res.ok) { throw new Error(errorDetail(res, res.body)); }
            row.classList.add("handled", "handled-" + b.dataset.verify);
            b.closest("td").textContent = text("done") + ": " + (T["state_" + b.dataset.verify] || "");
            show(status, text("done"));
          }).catch(function (err) {
            row.querySelectorAll("button").forEach(function (x) { x.disabled = false; });
            show(status, text("failed") + ": " + (err.message || text("network")));
          });
      });
    });
    box.querySelectorAll("button[data-merge]").forEach(function (b) {
      b.addEventListener("click", function () {
        if (!window.confirm(text("merge_confirm"))) { return; }
        b.disabled = true;
        send("/bears/sightings/" + encodeURIComponent(b.dataset.merge) + "/merge",
             { method: "POST", headers: headers, body: JSON.stringify({ others: b.dataset.others.split(",") }) })
          .then(function (res) {
            if (!res.ok) { throw new Error(errorDetail(res, res.body)); }
            window.location.reload();
          }).catch(function (err) {
            b.disabled = false;
            show(status, text("failed") + ": " + (err.message || text("network")));
          });
      });
    });
  }

  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  if (typeof L !== "undefined") {
    document.querySelectorAll("[data-bears-map=public]").forEach(publicMap);
    document.querySelectorAll("[data-bears-map=pick]").forEach(pickMap);
  }
  var report = document.getElementById("report-form");
  if (report) { reportForm(report); }
  var subscribe = document.getElementById("subscribe-form");
  if (subscribe) { subscribeForm(subscribe); }
  var consoleBox = document.getElementById("console");
  if (consoleBox) { console_(consoleBox); }
})();
