/* The driver map: stations (or server-side clusters) for the current view, filters and position in the URL. */
(function () {
  "use strict";

  var API = "/api/v1/stations";
  var STATUS = {
    available: { letter: "A", label: "Available" },
    in_use: { letter: "U", label: "In use" },
    faulty: { letter: "F", label: "Faulty / out of order" },
    unknown: { letter: "?", label: "Status unknown" }
  };
  var LOCK_SVG = '<svg class="lock-icon" viewBox="0 0 12 14" width="10" height="12" aria-hidden="true">' +
    '<rect x="1" y="6" width="10" height="8" rx="1.5" fill="currentColor"/>' +
    '<path d="M3.2 6V4.2a2.8 2.8 0 0 1 5.6 0V6" stroke="currentColor" stroke-width="1.6" fill="none"/></svg>';
  // A small clock: the status is old (stale), drawn so that it does not depend on colour.
  var STALE_SVG = '<svg class="stale-icon" viewBox="0 0 12 12" width="10" height="10" aria-hidden="true">' +
    '<circle cx="6" cy="6" r="4.6" fill="#fff" stroke="currentColor" stroke-width="1.6"/>' +
    '<path d="M6 3.2V6l2 1.4" stroke="currentColor" stroke-width="1.4" fill="none"/></svg>';
  var FILTERS = ["standard", "min_power_kw", "operator", "available", "hide_limited"];

  var map, layer, inflight, debounce, openStationId = null;
  var form = document.getElementById("filters");
  var statusLine = document.getElementById("map-status");
  var panel = document.getElementById("station-panel");
  var panelBody = document.getElementById("station-body");
  var results = document.getElementById("search-results");

  function escapeHtml(value) {
    return String(value === null || value === undefined ? "" : value).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function ago(iso) {
    if (!iso) return "unknown";
    var minutes = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 60000));
    if (minutes < 60) return minutes + " min";
    if (minutes < 48 * 60) return Math.round(minutes / 60) + " h";
    return Math.round(minutes / 1440) + " days";
  }

  // --- filters and position in the URL ---------------------------------------------------------
  function filterParams() {
    var params = new URLSearchParams();
    FILTERS.forEach(function (name) {
      var field = form.elements[name];
      if (field.type === "checkbox") {
        if (field.checked) params.set(name, "true");
      } else if (field.value) {
        params.set(name, field.value);
      }
    });
    return params;
  }

  function restoreFilters(params) {
    FILTERS.forEach(function (name) {
      var field = form.elements[name];
      var value = params.get(name);
      if (field.type === "checkbox") field.checked = value === "true";
      else if (value !== null) field.value = value;
    });
  }

  function writeUrl() {
    var params = filterParams();
    var center = map.getCenter().wrap();
    params.set("lat", center.lat.toFixed(5));
    params.set("lon", center.lng.toFixed(5));
    params.set("z", map.getZoom());
    if (openStationId) params.set("station", openStationId);
    history.replaceState(null, "", window.location.pathname + "?" + params.toString());
  }

  function wrapLon(lon) {
    while (lon > 180) lon -= 360;
    while (lon < -180) lon += 360;
    return lon;
  }

  function bboxParam() {
    var b = map.getBounds();
    var west = b.getWest(), east = b.getEast();
    if (east - west >= 360) { west = -180; east = 180; } else { west = wrapLon(west); east = wrapLon(east); }
    var south = Math.max(-90, b.getSouth()), north = Math.min(90, b.getNorth());
    return [west, south, east, north].map(function (v) { return v.toFixed(5); }).join(",");
  }

  // Markers are focusable buttons: Enter or Space selects them, as a click does.
  function onActivate(el, action) {
    el.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        event.stopPropagation();
        action();
      }
    });
  }

  // --- markers -----------------------------------------------------------------------------------
  function stationLabel(p) {
    var text = p.name + ": " + (STATUS[p.status] || STATUS.unknown).label;
    if (p.stale) text += " (status may be out of date)";
    if (p.limited) text += ", limited access";
    return text;
  }

  function stationMarker(feature) {
    var p = feature.properties;
    var status = STATUS[p.status] ? p.status : "unknown";
    var info = STATUS[status];
    var html = '<span class="marker-shape status-' + status + (p.stale ? " is-stale" : "") + '">' + info.letter +
      (p.limited ? '<span class="lock-badge">' + LOCK_SVG + "</span>" : "") +
      (p.stale ? '<span class="stale-badge">' + STALE_SVG + "</span>" : "") + "</span>";
    var marker = L.marker([feature.geometry.coordinates[1], feature.geometry.coordinates[0]], {
      icon: L.divIcon({ className: "station-icon", html: html, iconSize: [24, 24], iconAnchor: [12, 12] }),
      title: stationLabel(p),
      keyboard: true
    });
    marker.on("click", function () { openStation(p.id); });
    marker.on("add", function () {
      var el = marker.getElement();
      el.setAttribute("role", "button");
      el.setAttribute("aria-label", stationLabel(p));
      el.dataset.stationId = p.id;
      el.dataset.status = status;
      el.dataset.limited = p.limited ? "true" : "false";
      el.dataset.stale = p.stale ? "true" : "false";
      onActivate(el, function () { openStation(p.id); });
    });
    return marker;
  }

  function clusterMarker(feature) {
    var p = feature.properties;
    var latlng = [feature.geometry.coordinates[1], feature.geometry.coordinates[0]];
    var text = p.count >= 10000 ? Math.round(p.count / 1000) + "k" : String(p.count);
    var size = p.count >= 1000 ? 44 : 34;
    var label = p.count + " stations, " + (p.statuses.available || 0) + " available. Select to zoom in.";
    var marker = L.marker(latlng, {
      icon: L.divIcon({
        className: "cluster-icon",
        html: '<span class="cluster-shape' + (size > 34 ? " big" : "") + '">' + text + "</span>",
        iconSize: [size, size],
        iconAnchor: [size / 2, size / 2]
      }),
      title: label,
      keyboard: true
    });
    function zoomIn() { map.setView(latlng, Math.min(map.getZoom() + 2, map.getMaxZoom())); }
    marker.on("click", zoomIn);
    marker.on("add", function () {
      var el = marker.getElement();
      onActivate(el, zoomIn);
      el.setAttribute("role", "button");
      el.setAttribute("aria-label", label);
      el.dataset.count = p.count;
    });
    return marker;
  }

  function load() {
    var params = filterParams();
    params.set("bbox", bboxParam());
    params.set("zoom", map.getZoom());
    if (inflight) inflight.abort();
    inflight = new AbortController();
    fetch(API + "?" + params.toString(), { signal: inflight.signal, headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("The map could not load stations (" + response.status + ").");
        return response.json();
      })
      .then(function (data) {
        layer.clearLayers();
        data.features.forEach(function (feature) {
          layer.addLayer(feature.properties.cluster ? clusterMarker(feature) : stationMarker(feature));
        });
        var n = data.meta.stations;
        statusLine.textContent = data.meta.clustered
          ? n + " stations here, grouped: zoom in or select a group."
          : (n === 0 ? "No station here matches the filters." : n + (n === 1 ? " station" : " stations") + " shown.");
        document.body.dataset.mapLoaded = String(Date.now());
      })
      .catch(function (error) {
        if (error.name !== "AbortError") statusLine.textContent = error.message;
      });
  }

  function reload() {
    clearTimeout(debounce);
    debounce = setTimeout(function () { writeUrl(); load(); }, 120);
  }

  // --- prices (tariffs, issue 14): one line per connector, the words come from the server ---------
  function priceLine(price) {
    if (!price) return "";
    var html = '<div class="price price-' + escapeHtml(price.status) + '" data-testid="price">' + escapeHtml(price.text);
    if (price.alt_text) html += '<br><span class="price-alt">' + escapeHtml(price.alt_text) + "</span>";
    return html + "</div>";
  }

  // --- station panel -------------------------------------------------------------------------
  function renderStation(p) {
    var key = STATUS[p.status] ? p.status : "unknown";
    var status = STATUS[key];
    var html = '<h2 id="station-name">' + escapeHtml(p.name) + "</h2>" +
      "<p>" + escapeHtml(p.address) + ", " + escapeHtml(p.postal_code) + " " + escapeHtml(p.city) + "</p>" +
      "<p><strong>Operator:</strong> " + escapeHtml(p.operator) +
      // No opening times given: say nothing about them rather than "not given".
      (p.opening_hours ? "<br><strong>Opening times:</strong> " + escapeHtml(p.opening_hours) : "") +
      "<br><strong>Up to:</strong> " + escapeHtml(p.max_power_kw) + " kW</p>" +
      (p.open_now
        ? '<p class="open-now ' + (p.open_now.indexOf("Open") === 0 ? "is-open" : "is-closed") + '">' +
          escapeHtml(p.open_now) + "</p>"
        : "") +
      '<p class="station-status"><span class="marker-shape status-' + key + (p.stale ? " is-stale" : "") +
      '" aria-hidden="true">' + status.letter + "</span> " + status.label +
      ", updated " + ago(p.status_updated_at) + " ago" + "</p>";
    if (p.stale) {
      html += '<p class="stale-note">This status is older than ' + p.stale_after_minutes +
        " minutes and may no longer be true.</p>";
    }
    if (p.limited) {
      html += '<div class="limited"><strong><span class="lock-badge static">' + LOCK_SVG + "</span> Limited access</strong><ul>" +
        p.limited_reasons.map(function (r) { return "<li>" + escapeHtml(r) + "</li>"; }).join("") + "</ul></div>";
    }
    if (p.parking_information && p.parking_information.length) {
      // Rules every driver of ours can follow (EV_ONLY, PLUGGED): information, never the lock.
      html += '<div class="parking-info"><strong>Parking</strong><ul>' +
        p.parking_information.map(function (r) { return "<li>" + escapeHtml(r) + "</li>"; }).join("") + "</ul></div>";
    }
    html += '<p class="how-to-start"><strong>Start with:</strong> ' +
      (p.card ? "your MobilityPlus card" : "not with the card") + " · " + (p.app ? "the app" : "not from the app") + "</p>";
    html += '<h3>Charge points</h3><ul class="evse-list">' + p.evses.map(function (e) {
      var sKey = STATUS[e.map_status] ? e.map_status : "unknown";
      var s = STATUS[sKey];
      return '<li><div class="evse-head"><span class="marker-shape status-' + sKey + (e.stale ? " is-stale" : "") +
        '" aria-hidden="true">' + s.letter + "</span><strong>" + escapeHtml(e.evse_id || e.uid) + "</strong> " + s.label +
        (e.status_changed_at ? " for " + ago(e.status_changed_at) : "") + "</div><ul>" +
        e.connectors.map(function (c) {
          return "<li>" + escapeHtml(c.label) + " · " + escapeHtml(c.power_kw) + " kW · " +
            escapeHtml(c.power_type.replace(/_/g, " ")) + " " + escapeHtml(c.format.toLowerCase()) +
            priceLine(c.price) + "</li>";
        }).join("") + "</ul>" +
        "<div>" + (e.card ? "Card: yes" : "Card: no") + " · " + (e.app ? "App: yes" : "App: no") + "</div>" +
        (e.start_url && e.map_status === "available"
          ? '<a class="start-link" href="' + escapeHtml(e.start_url) + '">Start charging</a>' : "") +
        "</li>";
    }).join("") + "</ul>";
    return html;
  }

  function openStation(id) {
    fetch(API + "/" + encodeURIComponent(id), { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("This station is no longer on the map.");
        return response.json();
      })
      .then(function (feature) {
        openStationId = feature.properties.id;
        panelBody.innerHTML = renderStation(feature.properties);
        panel.hidden = false;
        panel.focus();
        writeUrl();
      })
      .catch(function (error) { statusLine.textContent = error.message; });
  }

  function closeStation() {
    panel.hidden = true;
    openStationId = null;
    writeUrl();
    map.getContainer().focus();
  }

  // --- search and near me ----------------------------------------------------------------------
  function showResults(items, emptyText) {
    results.innerHTML = "";
    if (!items.length) {
      results.innerHTML = "<li>" + escapeHtml(emptyText) + "</li>";
      return;
    }
    items.forEach(function (item) {
      var li = document.createElement("li");
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = item.label;
      button.addEventListener("click", function () {
        if (item.id) {
          map.setView([item.lat, item.lon], Math.max(map.getZoom(), 16));
          openStation(item.id);
        } else {
          map.setView([item.lat, item.lon], 13);
        }
      });
      li.appendChild(button);
      results.appendChild(li);
    });
  }

  document.getElementById("search-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var q = document.getElementById("search-input").value.trim();
    if (q.length < 2) { showResults([], "Type at least two characters."); return; }
    fetch(API + "/search?q=" + encodeURIComponent(q))
      .then(function (response) { return response.json(); })
      .then(function (data) {
        showResults((data.results || []).map(function (r) {
          return { id: r.id, lat: r.lat, lon: r.lon, label: r.kind === "place" ? r.label + " (" + r.stations + " stations)" : r.label };
        }), "Nothing found for “" + q + "”.");
      });
  });

  document.getElementById("near-me").addEventListener("click", function () {
    if (!navigator.geolocation) { statusLine.textContent = "Your browser cannot tell where you are."; return; }
    statusLine.textContent = "Finding your position…";
    navigator.geolocation.getCurrentPosition(function (position) {
      var lat = position.coords.latitude, lon = position.coords.longitude;
      map.setView([lat, lon], 14);
      var params = filterParams();
      params.set("lat", lat); params.set("lon", lon); params.set("radius_km", 25); params.set("limit", 5);
      fetch(API + "/nearby?" + params.toString())
        .then(function (response) { return response.json(); })
        .then(function (data) {
          showResults(data.features.map(function (f) {
            var p = f.properties;
            return { id: p.id, lat: f.geometry.coordinates[1], lon: f.geometry.coordinates[0],
              label: p.name + " · " + p.distance_km.toFixed(1) + " km · " + (STATUS[p.status] || STATUS.unknown).label };
          }), "No station within 25 km.");
        });
    }, function () { statusLine.textContent = "Your position is not available."; }, { timeout: 10000 });
  });

  form.addEventListener("change", reload);
  form.addEventListener("submit", function (event) { event.preventDefault(); reload(); });
  document.getElementById("panel-close").addEventListener("click", closeStation);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !panel.hidden) closeStation();
  });

  // Called by django-leaflet once the map exists.
  window.mobilityplusMap = function (createdMap) {
    map = createdMap;
    layer = L.layerGroup().addTo(map);
    var params = new URLSearchParams(window.location.search);
    restoreFilters(params);
    var lat = parseFloat(params.get("lat")), lon = parseFloat(params.get("lon")), zoom = parseInt(params.get("z"), 10);
    if (isFinite(lat) && isFinite(lon)) map.setView([lat, lon], isFinite(zoom) ? zoom : map.getZoom());
    if (window.matchMedia("(max-width: 700px)").matches) {
      document.getElementById("filters-box").open = false;
      document.querySelector(".legend").open = false;
    }
    map.on("moveend", reload);
    load();
    if (params.get("station")) openStation(params.get("station"));
  };
})();
