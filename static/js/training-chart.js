// The loss chart of a training run page (Chart.js, vendored in static/vendor/):
//   <canvas id="loss-chart" data-metrics-url="/api/training-runs/7/metrics"
//           data-run-status="running">
// draws train loss and eval loss by step, with the learning rate on a second axis, from the
// run's metrics endpoint; refetches every few seconds while the run is queued or running (the
// endpoint's "status" says when it has ended), and binds again after htmx swaps a new canvas in.
(function () {
  "use strict";

  var REFRESH_MS = 3000;
  var ACTIVE = { queued: true, running: true };

  function points(rows, key) {
    var out = [];
    rows.forEach(function (row) {
      var y = row[key];
      if (typeof y === "number" && isFinite(y)) { out.push({ x: row.step, y: y }); }
    });
    return out;
  }

  function makeChart(canvas) {
    return new window.Chart(canvas, {
      type: "line",
      data: {
        datasets: [
          { label: "train loss", data: [], yAxisID: "loss", borderColor: "#2563eb", backgroundColor: "#2563eb", pointRadius: 0, borderWidth: 2 },
          { label: "eval loss", data: [], yAxisID: "loss", borderColor: "#dc2626", backgroundColor: "#dc2626", pointRadius: 3, borderWidth: 2 },
          { label: "learning rate", data: [], yAxisID: "lr", borderColor: "#9ca3af", backgroundColor: "#9ca3af", pointRadius: 0, borderWidth: 1, borderDash: [4, 4] }
        ]
      },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        aspectRatio: 3,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: { type: "linear", title: { display: true, text: "step" } },
          loss: { type: "linear", position: "left", title: { display: true, text: "loss" } },
          lr: { type: "linear", position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "learning rate" } }
        }
      }
    });
  }

  function bind(canvas) {
    if (!canvas || canvas.dataset.chartBound || !window.Chart || !canvas.dataset.metricsUrl) { return; }
    canvas.dataset.chartBound = "1";
    var chart = makeChart(canvas);
    var timer = null;

    function schedule(status) {
      if (timer) { clearTimeout(timer); timer = null; }
      if (ACTIVE[status] && document.body.contains(canvas)) { timer = setTimeout(load, REFRESH_MS); }
    }

    function load() {
      fetch(canvas.dataset.metricsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (series) {
          if (!document.body.contains(canvas)) { chart.destroy(); return; }
          chart.data.datasets[0].data = points(series.train || [], "loss");
          chart.data.datasets[1].data = points(series.eval || [], "eval_loss");
          chart.data.datasets[2].data = points(series.train || [], "learning_rate");
          chart.update("none");
          canvas.dataset.runStatus = series.status;
          canvas.dataset.points = String(chart.data.datasets[0].data.length);
          schedule(series.status);
        })
        .catch(function () {
          // A failed poll (a restart, a dropped connection) is retried while the run was active.
          schedule(canvas.dataset.runStatus);
        });
    }

    load();
  }

  function init() { bind(document.getElementById("loss-chart")); }

  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:afterSettle", init);
})();
