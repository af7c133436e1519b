/* The driver map: stations (or server-side clusters) for the current view, a list of them nearest first, a station
   panel (a bottom sheet on phones), search, favourites, filters and position in the URL, a refresh of what is on
   screen every few seconds, and an offline basemap (Natural Earth borders) whenever tiles fail. */
(function () {
  "use strict";

  var API = "/api/v1/stations";
  var fmt = window.MP.format;
  var STATUS = {
    available: { letter: "A" }, in_use: { letter: "U" }, faulty: { letter: "F" }, unknown: { letter: "?" }
  };
  var LOCK_SVG = '<svg class="lock-icon" viewBox="0 0 12 14" width="10" height="12" aria-hidden="true">' +
    '<rect x="1" y="6" width="10" height="8" rx="1.5" fill="currentColor"/>' +
    '<path d="M3.2 6V4.2a2.8 2.8 0 0 1 5.6 0V6" stroke="currentColor" stroke-width="1.6" fill="none"/></svg>';
  // A small clock: the status is old (stale), drawn so that it does not depend on colour.
  var STALE_SVG = '<svg class="stale-icon" viewBox="0 0 12 12" width="10" height="10" aria-hidden="true">' +
    '<circle cx="6" cy="6" r="4.6" fill="#fff" stroke="currentColor" stroke-width="1.6"/>' +
    '<path d="M6 3.2V6l2 1.4" stroke="currentColor" stroke-width="1.4" fill="none"/></svg>';
  var ICON = {
    bolt: '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true"><path d="M13 2 4 14h7l-1 8 9-12h-7z" fill="currentColor"/></svg>',
    route: '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true"><path d="M12 2 22 12 12 22 2 12z" fill="none" stroke="currentColor" stroke-width="2"/><path d="M9 14v-3h5M12 8.5l2.5 2.5L12 13.5" fill="none" stroke="currentColor" stroke-width="1.8"/></svg>',
    star: '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true"><path d="m12 3 2.7 5.6 6.1.8-4.5 4.2 1.1 6L12 16.8 6.6 19.6l1.1-6-4.5-4.2 6.1-.8z" fill="currentColor"/></svg>',
    card: '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true"><rect x="3" y="6" width="18" height="12" rx="2" fill="none" stroke="currentColor" stroke-width="2"/><path d="M3 10h18" stroke="currentColor" stroke-width="2"/></svg>'
  };
  var FILTERS = ["standard", "min_power_kw", "operator", "available", "hide_limited"];
  var PHONE = window.matchMedia("(max-width: 700px)");

  var map, layer, inflight, debounce, openStationId = null, openStationText = null;
  var lastFeatures = [], lastViewText = null, clustered = false, origin = null, favourites = {}, openFeature = null;
  var layout = document.getElementById("map-layout");
  var mapElement = document.getElementById("map");
  var form = document.getElementById("filters");
  var statusLine = document.getElementById("map-status");
  var panel = document.getElementById("station-panel");
  var panelBody = document.getElementById("station-body");
  var results = document.getElementById("search-results");
  var filtersBox = document.getElementById("filters-box");
  var filtersToggle = document.getElementById("filters-toggle");
  var viewToggle = document.getElementById("view-toggle");
  var list = document.getElementById("station-list");
  var listItems = document.getElementById("station-list-items");
  var loggedIn = mapElement.dataset.loggedIn === "true";
  var refreshMs = Math.max(1000, parseFloat(mapElement.dataset.refreshSeconds || "5") * 1000);

  function escapeHtml(value) {
    return String(value === null || value === undefined ? "" : value).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function statusKey(code) { return STATUS[code] ? code : "unknown"; }
  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
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
    countFilters();
  }

  function countFilters() {
    var n = 0;
    filterParams().forEach(function () { n += 1; });
    document.getElementById("filter-count").textContent = n ? String(n) : "";
  }

  function writeUrl() {
    var params = filterParams();
    var center = map.getCenter().wrap();
    params.set("lat", center.lat.toFixed(5));
    params.set("lon", center.lng.toFixed(5));
    params.set("z", map.getZoom());
    if (openStationId) params.set("station", openStationId);
    if (layout.dataset.view === "list") params.set("view", "list");
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
  function freeText(p) {
    return (p.available_evses || 0) + "/" + (p.evses || 0);
  }

  function stationLabel(p) {
    var text = p.name + ": " + fmt.status("map", statusKey(p.status)) + ", " + (p.available_evses || 0) + " of " +
      (p.evses || 0) + " charge points free";
    if (p.stale) text += " (status may be out of date)";
    if (p.limited) text += ", limited access";
    return text;
  }

  function stationMarker(feature) {
    var p = feature.properties;
    var status = statusKey(p.status);
    var html = '<span class="station-pin" aria-hidden="true"><span class="marker-shape status-' + status + (p.stale ? " is-stale" : "") + '">' +
      STATUS[status].letter +
      (p.limited ? '<span class="lock-badge">' + LOCK_SVG + "</span>" : "") +
      (p.stale ? '<span class="stale-badge">' + STALE_SVG + "</span>" : "") + "</span>" +
      '<span class="free">' + freeText(p) + "</span></span>" +
      // The name comes from this text (not an aria-label), so what is seen and what is read agree.
      '<span class="visually-hidden">' + escapeHtml(stationLabel(p)) + "</span>";
    var marker = L.marker([feature.geometry.coordinates[1], feature.geometry.coordinates[0]], {
      icon: L.divIcon({ className: "station-icon", html: html, iconSize: [58, 30], iconAnchor: [15, 15] }),
      title: stationLabel(p),
      keyboard: true
    });
    marker.on("click", function () { openStation(p.id); });
    marker.on("add", function () {
      var el = marker.getElement();
      el.setAttribute("role", "button");
      el.dataset.stationId = p.id;
      el.dataset.status = status;
      el.dataset.free = freeText(p);
      el.dataset.limited = p.limited ? "true" : "false";
      el.dataset.stale = p.stale ? "true" : "false";
      if (String(p.id) === String(openStationId)) el.classList.add("is-selected");
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

  function drawMarkers(data) {
    // Keep the keyboard where it was: a refresh redraws the markers, and the focused one comes back focused.
    var focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.stationId : null;
    layer.clearLayers();
    data.features.forEach(function (feature) {
      layer.addLayer(feature.properties.cluster ? clusterMarker(feature) : stationMarker(feature));
    });
    if (focused) {
      var again = mapElement.querySelector('.station-icon[data-station-id="' + focused + '"]');
      if (again) again.focus({ preventScroll: true });
    }
  }

  function load(quiet) {
    if (quiet && inflight) return;  // a move is loading already: it brings the news too
    var params = filterParams();
    params.set("bbox", bboxParam());
    params.set("zoom", map.getZoom());
    if (inflight) inflight.abort();
    var controller = new AbortController();
    inflight = controller;
    fetch(API + "?" + params.toString(), { signal: controller.signal, headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("The map could not load stations (" + response.status + ").");
        return response.json();
      })
      .then(function (data) {
        var text = JSON.stringify(data.features);
        if (text !== lastViewText) {
          lastViewText = text;
          drawMarkers(data);
        }
        lastFeatures = data.features;
        clustered = data.meta.clustered;
        var n = data.meta.stations;
        statusLine.textContent = data.meta.clustered
          ? n + " stations here, grouped: zoom in or select a group."
          : (n === 0 ? "No station here matches the filters." : n + (n === 1 ? " station" : " stations") + " shown.");
        renderList();
        document.body.dataset.mapLoaded = String(Date.now());
      })
      .catch(function (error) {
        if (error.name !== "AbortError") statusLine.textContent = error.message;
      })
      .finally(function () { if (inflight === controller) inflight = null; });
  }

  function reload() {
    clearTimeout(debounce);
    debounce = setTimeout(function () { writeUrl(); load(false); }, 120);
  }

  // --- list view: the stations in view, nearest first ----------------------------------------------
  function distanceKm(a, b) {
    var rad = Math.PI / 180, dLat = (b.lat - a.lat) * rad, dLon = (b.lng - a.lng) * rad;
    var h = Math.sin(dLat / 2) * Math.sin(dLat / 2) +
      Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) * Math.sin(dLon / 2);
    return 12742 * Math.asin(Math.sqrt(h));
  }

  function stationRow(feature, from) {
    var p = feature.properties, status = statusKey(p.status);
    var here = L.latLng(feature.geometry.coordinates[1], feature.geometry.coordinates[0]);
    var km = distanceKm(from, here);
    var li = document.createElement("li");
    var button = document.createElement("button");
    button.type = "button";
    button.className = "station-row";
    button.dataset.stationId = p.id;
    button.innerHTML = '<span class="marker-shape status-' + status + '" aria-hidden="true">' + STATUS[status].letter + "</span>" +
      '<span class="row-name">' + (favourites[p.id] ? "★ " : "") + escapeHtml(p.name) + "</span>" +
      '<span class="row-distance">' + (km < 10 ? km.toFixed(1) : Math.round(km)) + " km</span>" +
      '<span class="row-meta">' + escapeHtml(fmt.status("map", status)) + " · " + freeText(p) + " free · up to " +
      escapeHtml(p.max_power_kw) + " kW" + (p.limited ? " · limited access" : "") + "</span>";
    button.addEventListener("click", function () { openStation(p.id, { fly: here }); });
    li.appendChild(button);
    return { km: km, li: li };
  }

  function renderList() {
    if (list.hidden) return;
    listItems.innerHTML = "";
    var from = origin || map.getCenter();
    var starred = Object.keys(favourites).map(function (id) { return favourites[id]; });
    if (starred.length) {
      // The driver's favourites first, wherever they are, nearest first.
      var head = document.createElement("li");
      head.className = "list-heading";
      head.textContent = "Your favourites";
      listItems.appendChild(head);
      starred.map(function (f) { return stationRow(f, from); })
        .sort(function (a, b) { return a.km - b.km; })
        .forEach(function (row) { row.li.firstChild.classList.add("favourite-row"); listItems.appendChild(row.li); });
      var rest = document.createElement("li");
      rest.className = "list-heading";
      rest.textContent = "In view";
      listItems.appendChild(rest);
    }
    var rows = lastFeatures.filter(function (f) { return !f.properties.cluster; })
      .map(function (f) { return stationRow(f, from); })
      .sort(function (a, b) { return a.km - b.km; });
    if (clustered) {
      listItems.insertAdjacentHTML("beforeend", '<li class="muted">Too many stations here to list: zoom in.</li>');
      return;
    }
    if (!rows.length) listItems.insertAdjacentHTML("beforeend", '<li class="muted">No station in view.</li>');
    rows.forEach(function (row) { listItems.appendChild(row.li); });
  }

  function setView(view) {
    layout.dataset.view = view;
    list.hidden = view !== "list";
    viewToggle.setAttribute("aria-pressed", String(view === "list"));
    viewToggle.querySelector("span").textContent = view === "list" ? "Hide list" : "List";
    renderList();
    if (map) writeUrl();
  }

  // --- prices (tariffs, issue 14): one line per connector, the words come from the server ---------
  function priceLine(price) {
    if (!price) return "";
    var html = '<div class="price price-' + escapeHtml(price.status) + '" data-testid="price">' + escapeHtml(price.text);
    if (price.alt_text) html += '<br><span class="price-alt">' + escapeHtml(price.alt_text) + "</span>";
    return html + "</div>";
  }

  // --- station panel -------------------------------------------------------------------------
  function connectorLine(c) {
    // `price`: the operator's price for this connector in words, or why there is none (docs/tariffs.md).
    return "<li>" + escapeHtml(c.label) + " · " + escapeHtml(c.power_kw) + " kW · " +
      escapeHtml(c.power_type.replace(/_/g, " ")) + " " + escapeHtml(c.format.toLowerCase()) +
      priceLine(c.price) + "</li>";
  }

  function helpHtml(app) {
    var template = document.getElementById(app ? "card-help-app" : "card-help-card-only");
    return template ? template.innerHTML : "";
  }

  function renderStation(p) {
    var key = statusKey(p.status);
    var startable = p.evses.filter(function (e) { return e.start_url && e.map_status === "available"; });
    var html = '<div class="station-head"><h2 id="station-name">' + escapeHtml(p.name) + "</h2>" +
      '<p class="muted">' + escapeHtml(p.address) + ", " + escapeHtml(p.postal_code) + " " + escapeHtml(p.city) + "</p></div>" +
      '<div class="station-summary"><span class="status-pill pill-' + key + '" data-testid="station-status">' +
      '<span class="marker-shape status-' + key + (p.stale ? " is-stale" : "") + '" aria-hidden="true">' + STATUS[key].letter + "</span> " +
      escapeHtml(p.status_label || fmt.status("map", key)) + "</span>" +
      '<span data-testid="free-total"><strong>' + p.available_evses + " of " + p.evse_count + "</strong> free</span>" +
      "<span>· up to " + escapeHtml(p.max_power_kw) + " kW</span></div>";
    // The main actions first, so they stay within reach at the top of the sheet.
    html += '<div class="station-actions">';
    if (startable.length === 1) {
      html += '<a class="btn start-link" href="' + escapeHtml(startable[0].start_url) + '">' + ICON.bolt + " Start charging</a>";
    } else if (startable.length > 1) {
      html += '<a class="btn" href="#evse-list">' + ICON.bolt + " Start: choose a charge point</a>";
    }
    html += '<a class="btn btn-secondary" data-testid="directions" href="' + escapeHtml(p.directions_url) +
      '" target="_blank" rel="noopener">' + ICON.route + " Directions</a>";
    if (loggedIn) {
      var fav = !!favourites[p.id];
      html += '<button type="button" class="btn-secondary fav-button" data-testid="favourite" aria-pressed="' + fav + '">' +
        ICON.star + " " + (fav ? "Saved" : "Save") + "</button>";
    }
    html += "</div>";
    if (!p.app) {
      html += '<p class="card-only" data-testid="card-only">' + ICON.card + "<span><strong>" +
        escapeHtml(p.app_reason || "Card only") + "</strong> Hold your MobilityPlus card to the reader.</span></p>";
    }
    html += helpHtml(p.app);
    if (p.open_now) {
      html += '<p class="open-now ' + (p.open_now.indexOf("Open") === 0 ? "is-open" : "is-closed") + '">' + escapeHtml(p.open_now) + "</p>";
    }
    if (p.stale) {
      html += '<p class="stale-note">This status is older than ' + p.stale_after_minutes + " minutes and may no longer be true.</p>";
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
    html += '<p class="small"><strong>Operator:</strong> ' + escapeHtml(p.operator) +
      // No opening times given: say nothing about them rather than "not given".
      (p.opening_hours ? "<br><strong>Opening times:</strong> " + escapeHtml(p.opening_hours) : "") +
      "<br><strong>Status updated:</strong> " + escapeHtml(fmt.since(p.status_updated_at) || "never") +
      (p.status_updated_at ? " ago" : "") + "</p>";
    html += '<h3>Charge points</h3><ul class="evse-list" id="evse-list">' + p.evses.map(function (e) {
      var sKey = statusKey(e.map_status);
      var own = startable.length > 1 && e.start_url && e.map_status === "available";
      return '<li data-evse="' + escapeHtml(e.uid) + '"><div class="evse-head"><span class="marker-shape status-' + sKey +
        (e.stale ? " is-stale" : "") + '" aria-hidden="true">' + STATUS[sKey].letter + "</span><strong>" +
        escapeHtml(e.evse_id || e.uid) + '</strong> <span class="status-pill pill-' + sKey + '" data-testid="evse-status">' +
        escapeHtml(e.status_label || fmt.status("evse", e.status)) + "</span>" +
        (e.status_changed_at ? '<span class="muted small">for ' + escapeHtml(fmt.since(e.status_changed_at)) + "</span>" : "") +
        '</div><ul class="connectors">' + e.connectors.map(connectorLine).join("") + "</ul>" +
        '<p class="how-to-start">' + (e.app ? "Card or app" : "Card only") + "</p>" +
        (own ? '<a class="btn btn-small start-link" href="' + escapeHtml(e.start_url) + '">Start charging here</a>' : "") +
        "</li>";
    }).join("") + "</ul>";
    return html;
  }

  function showStation(feature, options) {
    var text = JSON.stringify(feature);
    openStationId = feature.properties.id;
    if (text === openStationText && !panel.hidden) return;  // a refresh that brought nothing new
    var refreshing = options.refresh && !panel.hidden;
    var scroll = panel.scrollTop;
    openStationText = text;
    openFeature = feature;
    panelBody.innerHTML = renderStation(feature.properties);
    var fav = panelBody.querySelector(".fav-button");
    if (fav) fav.addEventListener("click", function () { toggleFavourite(feature.properties.id, fav); });
    panel.hidden = false;
    layout.classList.add("sheet-open");
    mapElement.querySelectorAll(".station-icon.is-selected").forEach(function (el) { el.classList.remove("is-selected"); });
    var marker = mapElement.querySelector('.station-icon[data-station-id="' + openStationId + '"]');
    if (marker) marker.classList.add("is-selected");
    if (refreshing) {
      panel.scrollTop = scroll;
      document.body.dataset.panelRefreshed = String(Date.now());
      return;
    }
    panel.focus({ preventScroll: true });
    keepMarkerVisible(L.latLng(feature.geometry.coordinates[1], feature.geometry.coordinates[0]), options.fly);
    writeUrl();
  }

  // On a phone the sheet covers the lower half: move the map so the station sits in the middle of what is left.
  function keepMarkerVisible(latlng, fly) {
    if (fly) map.setView(fly, Math.max(map.getZoom(), 15), { animate: false });
    if (!PHONE.matches) return;
    // A tapped marker at the edge starts Leaflet's own pan-on-focus animation: stop it, or it undoes this pan.
    map.stop();
    map.invalidateSize({ pan: false });  // the sheet and the phone's toolbars change the map's size
    var size = map.getSize();
    var free = size.y - panel.offsetHeight;
    var point = map.latLngToContainerPoint(latlng);
    var dx = point.x - size.x / 2, dy = point.y - Math.max(40, free / 2);
    if (Math.abs(dx) > 2 || Math.abs(dy) > 2) map.panBy([dx, dy], { animate: false });
  }

  function openStation(id, options) {
    options = options || {};
    return fetch(API + "/" + encodeURIComponent(id), { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("This station is no longer on the map.");
        return response.json();
      })
      .then(function (feature) { showStation(feature, options); })
      .catch(function (error) { if (!options.refresh) statusLine.textContent = error.message; });
  }

  function closeStation() {
    panel.hidden = true;
    layout.classList.remove("sheet-open");
    openStationId = null;
    openStationText = null;
    mapElement.querySelectorAll(".station-icon.is-selected").forEach(function (el) { el.classList.remove("is-selected"); });
    writeUrl();
    map.getContainer().focus();
  }

  // --- favourites (logged-in drivers) ----------------------------------------------------------------
  function loadFavourites() {
    if (!loggedIn) return;
    fetch("/api/v1/favourites", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : { features: [] }; })
      .then(function (data) {
        favourites = {};
        data.features.forEach(function (f) { favourites[f.properties.id] = f; });
        renderList();
      });
  }

  function toggleFavourite(id, button) {
    var on = !favourites[id];
    fetch("/api/v1/favourites/" + encodeURIComponent(id), {
      method: on ? "PUT" : "DELETE",
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() }
    }).then(function (response) {
      if (!response.ok) throw new Error("Could not save the favourite.");
      if (on) {
        var p = openFeature.properties;
        favourites[id] = { type: "Feature", geometry: openFeature.geometry, properties: {
          id: p.id, name: p.name, status: p.status, evses: p.evse_count, available_evses: p.available_evses,
          max_power_kw: p.max_power_kw, limited: p.limited } };
      } else {
        delete favourites[id];
      }
      button.setAttribute("aria-pressed", String(on));
      button.innerHTML = ICON.star + " " + (on ? "Saved" : "Save");
      renderList();
    }).catch(function (error) { statusLine.textContent = error.message; });
  }

  // --- search and near me ----------------------------------------------------------------------
  function showResults(items, emptyText) {
    results.innerHTML = "";
    if (!items.length) {
      results.innerHTML = '<li class="empty">' + escapeHtml(emptyText) + "</li>";
      return;
    }
    items.forEach(function (item) {
      var li = document.createElement("li");
      var button = document.createElement("button");
      button.type = "button";
      button.dataset.kind = item.kind || "station";
      button.innerHTML = "<span>" + (item.what ? '<span class="result-what">' + escapeHtml(item.what) + "</span><br>" : "") +
        escapeHtml(item.label) + "</span>" + (item.extra ? '<span class="muted small">' + escapeHtml(item.extra) + "</span>" : "");
      button.addEventListener("click", function () {
        results.innerHTML = "";
        if (item.kind === "operator") {
          form.elements.operator.value = item.operator;
          countFilters();
          statusLine.textContent = "Showing only " + item.label + " stations.";
          reload();
        } else if (item.id) {
          openStation(item.id, { fly: L.latLng(item.lat, item.lon) });
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
    fetch(API + "/search?q=" + encodeURIComponent(q), { headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        showResults((data.results || []).map(function (r) {
          var extra = r.kind === "place" ? r.stations + (r.stations === 1 ? " station" : " stations") : "";
          return { kind: r.kind, id: r.id, lat: r.lat, lon: r.lon, label: r.label, what: r.what, extra: extra, operator: r.operator };
        }), "Nothing found for “" + q + "”.");
      });
  });

  document.getElementById("near-me").addEventListener("click", function () {
    if (!navigator.geolocation) { statusLine.textContent = "Your browser cannot tell where you are."; return; }
    statusLine.textContent = "Finding your position…";
    navigator.geolocation.getCurrentPosition(function (position) {
      var lat = position.coords.latitude, lon = position.coords.longitude;
      origin = L.latLng(lat, lon);
      map.setView([lat, lon], 14);
      var params = filterParams();
      params.set("lat", lat); params.set("lon", lon); params.set("radius_km", 25); params.set("limit", 5);
      fetch(API + "/nearby?" + params.toString())
        .then(function (response) { return response.json(); })
        .then(function (data) {
          showResults(data.features.map(function (f) {
            var p = f.properties;
            return { kind: "station", id: p.id, lat: f.geometry.coordinates[1], lon: f.geometry.coordinates[0],
              label: p.name + " · " + p.distance_km.toFixed(1) + " km · " + fmt.status("map", statusKey(p.status)),
              extra: freeText(p) + " free" };
          }), "No station within 25 km.");
        });
    }, function () { statusLine.textContent = "Your position is not available."; }, { timeout: 10000 });
  });

  function setFiltersOpen(open) {
    filtersBox.hidden = !open;
    filtersToggle.setAttribute("aria-expanded", String(open));
  }
  filtersToggle.addEventListener("click", function () { setFiltersOpen(filtersBox.hidden); });
  viewToggle.addEventListener("click", function () { setView(layout.dataset.view === "list" ? "map" : "list"); });
  form.addEventListener("change", function () { countFilters(); reload(); });
  form.addEventListener("submit", function (event) { event.preventDefault(); reload(); });
  document.getElementById("panel-close").addEventListener("click", closeStation);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !panel.hidden) closeStation();
  });

  // --- what is on screen, kept fresh -------------------------------------------------------------------
  function refresh() {
    if (document.hidden || !map) return;  // a hidden tab asks nothing
    load(true);
    if (openStationId) openStation(openStationId, { refresh: true });
  }
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });

  // --- offline basemap: Natural Earth borders and coastlines under the markers when tiles fail -----------
  var basemap = null;
  function showOfflineBasemap() {
    if (basemap || !window.topojson) return;
    basemap = "loading";
    fetch(mapElement.dataset.basemapUrl)
      .then(function (response) { return response.json(); })
      .then(function (topology) {
        // Below the tiles: a tile that does load covers it; a failed one leaves it showing.
        if (!map.getPane("basemap")) map.createPane("basemap").style.zIndex = 150;
        var renderer = L.canvas({ pane: "basemap", padding: 0.2 });
        basemap = L.geoJSON(window.topojson.feature(topology, topology.objects.countries), {
          pane: "basemap", renderer: renderer, interactive: false,
          style: { color: "#8a98a8", weight: 1, fillColor: "#f4f1e8", fillOpacity: 1 }
        }).addTo(map);
        map.attributionControl.addAttribution("Borders: Natural Earth (offline map)");
        document.body.dataset.basemap = "offline";
      })
      .catch(function () { basemap = null; });
  }
  function watchTiles() {
    map.eachLayer(function (l) { if (l instanceof L.TileLayer) l.on("tileerror", showOfflineBasemap); });
    if (navigator.onLine === false) showOfflineBasemap();
    window.addEventListener("offline", showOfflineBasemap);
  }

  // Called by django-leaflet once the map exists.
  window.mobilityplusMap = function (createdMap) {
    map = createdMap;
    layer = L.layerGroup().addTo(map);
    var params = new URLSearchParams(window.location.search);
    restoreFilters(params);
    var lat = parseFloat(params.get("lat")), lon = parseFloat(params.get("lon")), zoom = parseInt(params.get("z"), 10);
    if (isFinite(lat) && isFinite(lon)) map.setView([lat, lon], isFinite(zoom) ? zoom : map.getZoom());
    setFiltersOpen(!PHONE.matches);  // folded away on phones: the map gets the screen
    setView(params.get("view") === "list" ? "list" : "map");
    watchTiles();
    map.on("moveend", reload);
    load(false);
    loadFavourites();
    if (params.get("station")) openStation(params.get("station"));
    window.setInterval(refresh, refreshMs);
  };
})();
