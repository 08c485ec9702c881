// WhatsNext dashboard: live updates over server-sent events, a pause switch, page selection.
// Pages are complete without this script; it only keeps them fresh.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var source = null;
  var waiting = false;

  function state(text) {
    var el = document.getElementById("live-state");
    if (el) el.textContent = text;
    document.body.dataset.live = text;
  }

  function selecting() {
    return document.querySelector("input[name=ids]:checked") !== null;
  }

  function refresh() {
    if (selecting()) {
      waiting = true;
      state("held: jobs selected");
      return;
    }
    waiting = false;
    state("live");
    if (window.htmx) window.htmx.trigger(document.body, "wn-change");
  }

  function connect() {
    var url = document.body.dataset.events;
    if (!url || source) return;
    source = new EventSource(url);
    source.addEventListener("hello", function () { state("live"); });
    source.addEventListener("change", function () {
      document.body.dataset.changes = String(Number(document.body.dataset.changes || 0) + 1);
      refresh();
    });
    source.onerror = function () { state("reconnecting"); };
  }

  function disconnect() {
    if (source) source.close();
    source = null;
    state("paused");
  }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("live-toggle");
    var paused = window.localStorage && localStorage.getItem("wn-live") === "off";
    if (toggle) {
      toggle.checked = !paused;
      toggle.addEventListener("change", function () {
        if (window.localStorage) localStorage.setItem("wn-live", toggle.checked ? "on" : "off");
        if (toggle.checked) { connect(); refresh(); } else { disconnect(); }
      });
    }
    if (paused) state("paused"); else connect();

    document.addEventListener("change", function (ev) {
      var t = ev.target;
      if (t && t.id === "select-all") {
        document.querySelectorAll("input[name=ids]").forEach(function (box) { box.checked = t.checked; });
      }
      if (t && t.name === "ids" && waiting && !selecting()) refresh();
    });
  });
})();
