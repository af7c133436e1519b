// One press, one command: the start form cannot be submitted twice.
(function () {
  "use strict";
  document.querySelectorAll("form[data-submit-once]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var button = form.querySelector("button");
      if (button.disabled) { event.preventDefault(); return; }
      button.disabled = true; button.textContent = "Starting…";
    });
  });
})();
