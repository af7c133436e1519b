// The partner page's feed sync panel: polls the progress URL while a sync or a staff job is under way,
// and shows pages, objects, rate, rejects so far and the time left, then the outcome. No inline script (CSP).
(function () {
  "use strict";
  var panel = document.getElementById("dash-sync");
  if (!panel || !panel.dataset.progressUrl) { return; }
  var url = panel.dataset.progressUrl;
  var box = document.getElementById("sync-progress");
  var jobsList = document.getElementById("staff-jobs");
  var INTERVAL_MS = 2000;
  var timer = null;

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "-"; }
    if (seconds < 60) { return seconds + " s"; }
    if (seconds < 3600) { return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s"; }
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  function set(name, text) {
    var node = box.querySelector('[data-sync="' + name + '"]');
    if (node) { node.textContent = text; }
  }

  function showSync(sync) {
    if (!sync) { return; }
    box.dataset.status = sync.status;
    set("headline", sync.running ? "A " + sync.kind + " sync is running" : "Latest: " + sync.kind + " sync " + sync.status);
    set("pages", String(sync.pages));
    set("objects", sync.expected ? sync.objects + " of " + sync.expected : String(sync.objects));
    set("rate", sync.per_second.toFixed(1));
    set("rejected", String(sync.rejected));
    set("left", sync.running ? duration(sync.seconds_left) : "-");
    set("error", sync.error || "");
    var bar = box.querySelector('[data-sync="bar"]');
    if (bar && sync.percent !== null) { bar.value = sync.percent; }
  }

  function showJobs(jobs) {
    if (!jobsList || !jobs.length) { return; }
    jobs.forEach(function (job) {
      var item = jobsList.querySelector('[data-job="' + job.id + '"]');
      if (!item) { return; }
      var status = item.querySelector(".job-status");
      status.textContent = job.status_display;
      status.className = "job-status state-" + job.status;
      var outcome = item.querySelector(".job-outcome");
      if (job.outcome && !outcome) {
        item.appendChild(document.createElement("br"));
        outcome = document.createElement("span");
        outcome.className = "job-outcome";
        item.appendChild(outcome);
      }
      if (outcome) { outcome.textContent = job.outcome; }
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        showSync(data.sync);
        showJobs(data.jobs);
        box.dataset.polled = String(Number(box.dataset.polled || 0) + 1);
        if (!data.active) { window.clearInterval(timer); timer = null; box.dataset.active = "false"; }
        else { box.dataset.active = "true"; }
      })
      .catch(function () { /* the next tick tries again */ });
  }

  poll();
  timer = window.setInterval(poll, INTERVAL_MS);
}());
