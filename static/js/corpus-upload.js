// Multi-file upload with drag & drop and per-file progress (one XHR per file, so each file
// shows its own progress and its own error). Without JS the form posts normally.
//
// One action, one upload: choosing or dropping files uploads them at once, so the form's
// Upload button (kept for browsers without JS) is hidden, and the chosen files are taken out
// of the input before anything else can send them a second time.
//
// Each row then follows its document in the documents table below (data-status on each row),
// so a file the table marks failed never stays a green "queued" here.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("upload-input");
  const list = document.getElementById("upload-list");
  const submit = document.getElementById("upload-submit");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  if (submit) submit.hidden = true;

  const STATES = {
    queued: ["queued", "state pending"],
    parsing: ["parsing…", "state pending"],
    embedding: ["embedding…", "state pending"],
    ready: ["ready", "state ok"],
    failed: ["failed", "state error"],
  };

  function row(file) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;  // textContent: file names are untrusted
    const bar = document.createElement("div");
    bar.className = "progress";
    const fill = document.createElement("span");
    fill.style.width = "0%";
    bar.appendChild(fill);
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = "waiting";
    li.append(name, bar, state);
    list.appendChild(li);
    return { li, fill, state };
  }

  // A row whose upload was accepted shows its document's state from the table.
  function follow(li) {
    const id = li.dataset.docId;
    const tr = id && document.getElementById("doc-" + id);
    if (!tr || li.dataset.duplicate) return;
    const status = tr.dataset.status;
    const known = STATES[status];
    if (!known) return;
    const state = li.querySelector(".state");
    state.className = known[1];
    state.textContent = status === "failed" && tr.dataset.error
      ? "failed: " + tr.dataset.error  // textContent: the error names the (untrusted) file
      : known[0];
  }

  function followAll() {
    list.querySelectorAll("li[data-doc-id]").forEach(follow);
  }

  // Re-render the documents table after each upload. Done by hand, one at a time, rather than
  // by triggering htmx: a triggered request queued on an element that an earlier swap has
  // replaced is silently dropped, and the table would miss the last file.
  async function refreshDocuments() {
    const current = document.querySelector(form.dataset.refresh);
    if (!current) return;
    try {
      const resp = await fetch(current.getAttribute("hx-get"), {
        headers: { "HX-Request": "true" }, credentials: "same-origin",
      });
      if (!resp.ok) return;
      const tpl = document.createElement("template");
      tpl.innerHTML = (await resp.text()).trim();  // our own server-rendered, escaped fragment
      const fresh = tpl.content.firstElementChild;
      const now = document.querySelector(form.dataset.refresh);
      if (fresh && now) {
        now.replaceWith(fresh);
        if (window.htmx) window.htmx.process(fresh);  // re-arm polling while work is in progress
        followAll();
      }
    } catch (err) { /* the next poll or reload shows the state */ }
  }

  function duplicateOf(ui, result) {
    // "already uploaded as <link to the existing document>", built from text nodes only.
    ui.state.className = "state ok";
    ui.state.textContent = "already uploaded as ";
    const link = document.createElement("a");
    link.href = result.url;
    link.textContent = result.document || result.name;
    ui.state.appendChild(link);
    ui.li.dataset.duplicate = "1";
  }

  function send(file, ui) {
    return new Promise(function (resolve) {
      const data = new FormData();
      data.append("files", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          ui.fill.style.width = Math.round((100 * e.loaded) / e.total) + "%";
          ui.state.textContent = "uploading " + Math.round((100 * e.loaded) / e.total) + "%";
        }
      });
      xhr.addEventListener("load", function () {
        let result = null;
        try { result = JSON.parse(xhr.responseText).results[0]; } catch (err) { result = null; }
        if (result && result.ok) {
          ui.fill.style.width = "100%";
          ui.li.dataset.docId = result.id;
          if (result.duplicate) {
            duplicateOf(ui, result);
          } else {
            ui.state.className = "state pending";
            ui.state.textContent = "queued";
          }
        } else {
          ui.state.className = "state error";
          ui.state.textContent = (result && result.error) || ("failed (HTTP " + xhr.status + ")");
        }
        resolve();
      });
      xhr.addEventListener("error", function () {
        ui.state.className = "state error";
        ui.state.textContent = "network error";
        resolve();
      });
      xhr.send(data);
    });
  }

  async function upload(files) {
    const chosen = Array.from(files);
    input.value = "";  // these files are now this upload's: nothing can send them again
    const items = chosen.map(function (f) { return { file: f, ui: row(f) }; });
    for (const item of items) {
      await send(item.file, item.ui);  // sequential: predictable load on the server
      await refreshDocuments();
    }
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (input.files.length) upload(input.files);
  });
  input.addEventListener("change", function () { if (input.files.length) upload(input.files); });
  ["dragenter", "dragover"].forEach(function (type) {
    form.addEventListener(type, function (e) { e.preventDefault(); form.classList.add("dragover"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    form.addEventListener(type, function (e) { e.preventDefault(); form.classList.remove("dragover"); });
  });
  form.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files.length) upload(e.dataTransfer.files);
  });
  // The table polls itself (htmx) while documents are in progress: rows follow each swap.
  document.body.addEventListener("htmx:afterSettle", function (e) {
    if (e.target && e.target.id === "documents") followAll();
  });
  document.body.addEventListener("htmx:load", function (e) {
    if (e.target && e.target.id === "documents") followAll();
  });
})();
