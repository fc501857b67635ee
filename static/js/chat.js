// Chat page behaviour that HTML alone cannot express: Enter to send, clearing the box after
// sending, following the answer as it streams, and showing the connection state.
(function () {
  "use strict";
  var chat = document.getElementById("chat");
  if (!chat) { return; }
  var box = document.getElementById("chat-question");
  var form = document.getElementById("chat-form");
  var messages = document.getElementById("chat-messages");
  var badge = document.getElementById("chat-connection");

  function setState(state, label) {
    if (!badge) { return; }
    badge.dataset.state = state;
    badge.textContent = label;
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 160;
  }

  box.addEventListener("keydown", function (evt) {
    if (evt.key === "Enter" && !evt.shiftKey && !evt.isComposing) {
      evt.preventDefault();
      var ask = document.getElementById("ask-button");
      if (box.value.trim() && ask && !ask.disabled) { form.requestSubmit(); }
    }
  });

  chat.addEventListener("htmx:wsOpen", function () { setState("open", "connected"); });
  chat.addEventListener("htmx:wsClose", function (evt) {
    var code = evt.detail && evt.detail.event ? evt.detail.event.code : 0;
    if (code === 4404 || code === 4403 || code === 4401) {
      setState("closed", "not available");
    } else {
      setState("closed", "disconnected — reconnecting…");
    }
    var ask = document.getElementById("ask-button");
    if (ask) { ask.disabled = true; }
  });
  chat.addEventListener("htmx:wsAfterSend", function (evt) {
    if (evt.detail && evt.detail.elt === form) { box.value = ""; }
  });
  var follow = true;
  chat.addEventListener("htmx:wsBeforeMessage", function () { follow = nearBottom(); });
  chat.addEventListener("htmx:wsAfterMessage", function () {
    if (follow) { window.scrollTo(0, document.body.scrollHeight); }
  });
  if (messages && messages.lastElementChild) { window.scrollTo(0, document.body.scrollHeight); }
})();
