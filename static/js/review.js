/* Review workspace: keyboard shortcuts on the pair page, confirmation for bulk actions, and
   the judge-score histogram on the agreement page (Chart.js, vendored). No framework. */
(function () {
  "use strict";

  function typing(target) {
    var tag = (target && target.tagName) || "";
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function clickKey(key) {
    var el = document.querySelector('#review-form [data-key="' + key + '"]');
    if (!el) return false;
    if (el.tagName === "SUMMARY") {
      var box = el.parentElement;
      box.open = true;
      var field = box.querySelector("textarea");
      if (field) field.focus();
    } else {
      el.click();
    }
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) {
      // Ctrl/Cmd+Enter inside the edit box saves.
      if ((event.ctrlKey || event.metaKey) && event.key === "Enter" && typing(event.target)) {
        var save = document.querySelector('#review-form button[value="edit"]');
        if (save) { event.preventDefault(); save.click(); }
      }
      return;
    }
    var key = event.key.toLowerCase();
    if (key === "q") {
      var back = document.getElementById("back-to-queue");
      if (back) { event.preventDefault(); window.location.href = back.href; }
      return;
    }
    if (["a", "r", "e", "u"].indexOf(key) >= 0 && clickKey(key)) {
      event.preventDefault();
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  }, true);

  function drawHistogram() {
    var canvas = document.getElementById("score-histogram");
    var data = document.getElementById("histogram-data");
    if (!canvas || !data || typeof window.Chart === "undefined") return;
    var hist = JSON.parse(data.textContent);
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: ["1", "2", "3", "4", "5"],
        datasets: [
          { label: "approved by reviewer", data: hist.approved, backgroundColor: "#32d583" },
          { label: "rejected by reviewer", data: hist.rejected, backgroundColor: "#f97066" }
        ]
      },
      options: {
        responsive: true,
        scales: { x: { title: { display: true, text: "judge score" } },
                  y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "pairs" } } }
      }
    });
  }

  // After every deferred script (Chart.js may be loaded after this file) has run.
  if (document.readyState === "complete") {
    drawHistogram();
  } else {
    window.addEventListener("load", drawHistogram);
  }
})();
