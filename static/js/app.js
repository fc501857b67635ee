// Small behaviours every page shares. They live here, not in inline handlers or style
// attributes, because the Content-Security-Policy runs same-origin script files only.
//   data-progress="42"          on a progress bar's fill: its width (re-applied after htmx swaps)
//   data-confirm="Sure?"        on a form: ask before submitting
//   data-autosubmit             on a select: submit its form when it changes
//   data-scroll-to="element-id" on any element: scroll that element into view on load
(function () {
  "use strict";

  function applyProgress(root) {
    var bars = root.querySelectorAll ? root.querySelectorAll("[data-progress]") : [];
    if (root.dataset && root.dataset.progress !== undefined) { bars = [root].concat(Array.prototype.slice.call(bars)); }
    Array.prototype.forEach.call(bars, function (bar) {
      var value = parseFloat(bar.dataset.progress);
      if (!isNaN(value)) { bar.style.width = Math.max(0, Math.min(100, value)) + "%"; }
    });
  }

  function init(root) {
    applyProgress(root);
    var target = root.querySelector && root.querySelector("[data-scroll-to]");
    if (target) {
      var el = document.getElementById(target.dataset.scrollTo);
      if (el) { el.scrollIntoView({ block: "center" }); }
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form && form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field && field.dataset && field.dataset.autosubmit !== undefined && field.form) {
      field.form.requestSubmit ? field.form.requestSubmit() : field.form.submit();
    }
  });

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  // Fragments swapped in by htmx (polling tables, WebSocket messages) bring their own bars.
  document.addEventListener("htmx:load", function (event) { applyProgress(event.target); });
})();
