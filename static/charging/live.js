// The driver's live charging panel: polls /charging/live.json and redraws, so the page never needs a reload.
(function () {
  "use strict";
  var panel = document.getElementById("live");
  if (!panel) { return; }
  var url = panel.dataset.url;
  var interval = parseInt(panel.dataset.interval, 10) || 3000;
  var stopKey = null;  // one key per live session: a double press sends one STOP_SESSION

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") { node.textContent = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function figure(label, value, testid) {
    var dd = el("dd", {text: value, "data-testid": testid});
    if (testid === "duration") { dd.setAttribute("aria-live", "off"); }  // ticks every poll: not announced
    return el("div", {}, [el("dt", {text: label}), dd]);
  }

  function newKey() {
    return (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Date.now()) + Math.random();
  }

  function renderCommand(c) {
    var children = [
      el("strong", {text: c.action + " charging" + (c.station ? " at " + c.station : "") + ": "}),
      el("span", {"class": "badge", "data-testid": "command-status", text: c.status_label}),
      el("span", {text: " " + c.text})
    ];
    if (c.reason) { children.push(el("span", {"class": "reason", text: " (" + c.reason + ")"})); }
    if (c.retry_url) {
      children.push(document.createTextNode(" "));
      children.push(el("a", {href: c.retry_url, "data-testid": "retry", text: "Try again"}));
    }
    return el("div", {"class": "command command-" + c.status, "data-testid": "command", role: "status"}, children);
  }

  // tariffs (issue 14): a cost the CPO did not send is computed from the tariff and labelled as estimated.
  function costFigure(s) {
    if (!s.cost_estimated) {
      return figure(s.ended ? "Cost (operator's estimate)" : "Cost so far", s.cost || "not sent by the operator", "cost");
    }
    var node = figure(s.ended ? "Cost" : "Cost so far", s.cost, "cost");
    var dt = node.querySelector("dt");
    dt.appendChild(document.createTextNode(" "));
    dt.appendChild(el("span", {"class": "cost-estimated", "data-testid": "cost-estimated", text: "(estimated from the tariff)"}));
    return node;
  }

  function renderSession(s) {
    var figures = [figure("Charge point", s.evse, "evse"), figure("Started", s.start_display, "start")];
    if (s.ended) { figures.push(figure("Ended", s.end_display || "", "ended")); }
    figures.push(figure("Energy", s.kwh + " kWh", "kwh"));
    figures.push(figure("Duration", s.duration, "duration"));
    figures.push(costFigure(s));
    var box = el("div", {"class": "session" + (s.ended ? " session-ended" : ""), "data-testid": "session"}, [
      el("h2", {}, [
        el("span", {"data-field": "station", text: s.station + " "}),
        el("span", {"class": "badge status-" + s.status.toLowerCase(), "data-testid": "session-status", text: s.status_label})
      ]),
      el("p", {"class": "muted", text: (s.address ? s.address + " · " : "") + s.operator}),
      el("dl", {"class": "figures"}, figures)
    ]);
    if (s.ended) {
      if (s.cdr) {
        box.appendChild(el("p", {"class": "bill", "data-testid": "cdr"}, [
          document.createTextNode("Final bill: "),
          el("strong", {"data-testid": "cdr-energy", text: s.cdr.total_energy + " kWh"}),
          document.createTextNode(", total "),
          el("strong", {"data-testid": "cdr-cost", text: s.cdr.total_cost}),
          document.createTextNode(s.cdr.credited ? " (corrected)" : "")
        ]));
      } else {
        box.appendChild(el("p", {"class": "muted", "data-testid": "cdr-waiting", text: "Waiting for the operator's final bill…"}));
      }
      if (s.again_url) {
        box.appendChild(el("p", {}, [el("a", {href: s.again_url, "data-testid": "again", text: "Start charging here again"})]));
      }
    } else if (s.can_stop) {
      stopKey = stopKey || newKey();
      var form = el("form", {method: "post", action: "/charging/stop/" + s.id + "/"}, [
        el("input", {type: "hidden", name: "csrfmiddlewaretoken", value: panel.dataset.csrf}),
        el("input", {type: "hidden", name: "idempotency_key", value: stopKey}),
        el("button", {type: "submit", "data-testid": "stop", text: "Stop charging"})
      ]);
      form.addEventListener("submit", function () { form.querySelector("button").disabled = true; });
      box.appendChild(form);
    }
    return box;
  }

  var lastSignature = null;
  var liveSessionId = null;  // the session charging now, as last seen

  // A session just ended: the history below shows it at once (the page's own HTML, fetched again).
  function refreshHistory() {
    var history = document.getElementById("history-panel");
    if (!history) { return; }
    fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("history-panel");
        if (fresh) {
          history.replaceChildren.apply(history, Array.prototype.slice.call(fresh.childNodes));
          history.dataset.updated = String(Date.now());
        }
      })
      .catch(function () { /* next end of session will try again */ });
  }

  function watchEnd(data) {
    var nowLive = data.session && !data.session.ended ? data.session.id : null;
    if (liveSessionId !== null && nowLive !== liveSessionId) { refreshHistory(); }
    liveSessionId = nowLive;
  }

  // What the driver would notice changing; the ticking duration alone does not count.
  function signature(data) {
    var copy = JSON.parse(JSON.stringify(data));
    delete copy.now;
    if (copy.session) { delete copy.session.duration; }
    return JSON.stringify(copy);
  }

  function render(data) {
    watchEnd(data);
    var current = signature(data);
    if (current === lastSignature) {
      // Nothing new: only the clock moves, and the live region is not re-announced.
      var duration = panel.querySelector("[data-testid=duration]");
      if (duration && data.session) { duration.textContent = data.session.duration; }
      return;
    }
    // Keep a stop button the driver is pressing right now; redraw on the next poll.
    if (panel.contains(document.activeElement) && document.activeElement.dataset.testid === "stop") { return; }
    lastSignature = current;
    var nodes = [];
    if (data.command) { nodes.push(renderCommand(data.command)); }
    if (data.session) { nodes.push(renderSession(data.session)); }
    if (!nodes.length) { nodes.push(el("p", {"class": "muted", "data-testid": "no-session", text: "No charging session right now."})); }
    panel.replaceChildren.apply(panel, nodes);
    panel.dataset.updated = data.now || "";
  }

  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) { render(data); } })
      .catch(function () { /* offline for a moment: try again next tick */ })
      .finally(function () { window.setTimeout(poll, interval); });
  }
  var initial = panel.querySelector("[data-testid=session]");
  if (initial && !initial.classList.contains("session-ended") && panel.dataset.session) {
    liveSessionId = parseInt(panel.dataset.session, 10);
  }
  window.setTimeout(poll, interval);
})();
