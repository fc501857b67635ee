// Charts of an evaluation run page (Chart.js, vendored in static/vendor/), drawn from the
// page's <script type="application/json" id="eval-chart-data"> (json_script, so no inline
// script and no string from a document or a model is ever evaluated):
//   #eval-bars    metric bars per configuration (shares, 0..1; null metrics are left out),
//   #eval-judge   the judge's 1-5 score distribution per configuration,
//   #eval-recall  recall@1..k per configuration.
(function () {
  "use strict";

  var COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

  function colour(i) { return COLOURS[i % COLOURS.length]; }

  function readData() {
    var node = document.getElementById("eval-chart-data");
    if (!node) { return null; }
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  function bars(canvas, data) {
    var metrics = Object.keys(data.metrics);
    return new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: metrics,
        datasets: data.labels.map(function (label, i) {
          return {
            label: label,
            backgroundColor: colour(i),
            data: metrics.map(function (m) { return data.metrics[m][i]; })
          };
        })
      },
      options: { animation: false, scales: { y: { min: 0, max: 1 } } }
    });
  }

  function judge(canvas, data) {
    var scores = ["1", "2", "3", "4", "5"];
    return new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: scores,
        datasets: data.judge.map(function (entry, i) {
          return {
            label: entry.config,
            backgroundColor: colour(i),
            data: scores.map(function (s) { return (entry.scores || {})[s] || 0; })
          };
        })
      },
      options: { animation: false, scales: { x: { title: { display: true, text: "judge score" } }, y: { beginAtZero: true, ticks: { precision: 0 } } } }
    });
  }

  function recall(canvas, data) {
    var longest = 0;
    data.recall_curve.forEach(function (c) { longest = Math.max(longest, (c.curve || []).length); });
    var ks = [];
    for (var k = 1; k <= longest; k++) { ks.push(String(k)); }
    return new window.Chart(canvas, {
      type: "line",
      data: {
        labels: ks,
        datasets: data.recall_curve.map(function (c, i) {
          return { label: c.config, borderColor: colour(i), backgroundColor: colour(i), data: c.curve || [], spanGaps: false };
        })
      },
      options: { animation: false, scales: { x: { title: { display: true, text: "k" } }, y: { min: 0, max: 1 } } }
    });
  }

  function draw() {
    var data = readData();
    if (!data || !window.Chart) { return; }
    var pairs = [["eval-bars", bars], ["eval-judge", judge], ["eval-recall", recall]];
    pairs.forEach(function (pair) {
      var canvas = document.getElementById(pair[0]);
      if (canvas && !canvas.dataset.chartBound) {
        canvas.dataset.chartBound = "1";
        pair[1](canvas, data);
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
}());
