// The browser's twin of mobilityplus/display.py: statuses in words, durations, times labelled with their zone.
// The same words as the server (a browser test compares them), so a driver never reads a code.
(function () {
  "use strict";
  var STATUS_TEXT = {
    evse: { AVAILABLE: "Available", CHARGING: "In use", BLOCKED: "Blocked (parking spot taken)", RESERVED: "Reserved",
      INOPERATIVE: "Temporarily unavailable", OUTOFORDER: "Out of order", PLANNED: "Not in service yet", REMOVED: "Removed",
      UNKNOWN: "Status unknown" },
    map: { available: "Available", in_use: "In use", faulty: "Out of order", unknown: "Status unknown" },
    session: { PENDING: "Starting", ACTIVE: "Charging", RESERVATION: "Reserved", COMPLETED: "Ended", INVALID: "Not valid" },
    command: { pending: "Sending", sent: "Waiting for the charge point", accepted: "Accepted", rejected: "Rejected",
      failed: "Failed", timed_out: "No answer" }
  };

  function status(kind, code) {
    return (STATUS_TEXT[kind] || {})[code] || "Status unknown";
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    var hours = Math.floor(minutes / 60); minutes = minutes % 60;
    if (hours < 48) return hours + " h " + (minutes < 10 ? "0" : "") + minutes + " min";
    return Math.floor(hours / 24) + " days " + (hours % 24) + " h";
  }

  function since(iso) {
    if (!iso) return "";
    return duration((Date.now() - Date.parse(iso)) / 1000);
  }

  function zoneLabel(zone) {
    return zone === "UTC" || zone === "Etc/UTC" ? "UTC" : zone + " time";
  }

  // "14:05 (Europe/Brussels time)": the station's clock, and which clock it is.
  function time(iso, zone, withDate) {
    if (!iso) return "";
    zone = zone || "UTC";
    var options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: zone };
    if (withDate) { options.day = "numeric"; options.month = "short"; options.year = "numeric"; }
    var text;
    try { text = new Intl.DateTimeFormat("en-GB", options).format(new Date(iso)); }
    catch (e) { zone = "UTC"; options.timeZone = "UTC"; text = new Intl.DateTimeFormat("en-GB", options).format(new Date(iso)); }
    return text + " (" + zoneLabel(zone) + ")";
  }

  window.MP = window.MP || {};
  window.MP.format = { status: status, duration: duration, since: since, time: time, STATUS_TEXT: STATUS_TEXT };
})();
