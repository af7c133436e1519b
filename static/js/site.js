// Every page: the header's menu button (phones). Loaded in <head>, so the page is marked as scripted before it is drawn.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  document.addEventListener("DOMContentLoaded", function () {
    var bar = document.getElementById("topbar");
    var button = document.getElementById("menu-button");
    if (!bar || !button) return;
    function setOpen(open) {
      bar.classList.toggle("menu-open", open);
      button.setAttribute("aria-expanded", String(open));
    }
    button.addEventListener("click", function () { setOpen(!bar.classList.contains("menu-open")); });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && bar.classList.contains("menu-open")) { setOpen(false); button.focus(); }
    });
    document.addEventListener("click", function (event) {
      if (bar.classList.contains("menu-open") && !bar.contains(event.target)) setOpen(false);
    });
  });
})();
