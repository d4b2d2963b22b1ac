/* outagewatch: instant search on the home page, and live updates of every page.
   The pages work without this file; it only filters as you type and, when the server
   announces a change on /events (server-sent events), refetches the page and swaps <main>.
   Without EventSource (or while it is failing) it polls every 30 seconds instead. */
(function () {
  "use strict";
  var POLL_MS = 30000;
  var MIN_GAP_LIVE_MS = 3000;   // an ongoing incident: refresh at most every 3 s
  var MIN_GAP_QUIET_MS = 15000; // otherwise at most every 15 s
  // (a change in which incidents are ongoing refreshes at once)
  var lastSwap = Date.now();
  var pending = null;
  var busy = false;

  function filter() {
    var input = document.getElementById("q");
    var list = document.getElementById("services");
    if (!input || !list) return;
    var q = input.value.trim().toLowerCase();
    var shown = 0;
    var items = list.querySelectorAll(".svc");
    for (var i = 0; i < items.length; i++) {
      var hit = !q || (items[i].getAttribute("data-search") || "").indexOf(q) >= 0;
      items[i].hidden = !hit;
      if (hit) shown++;
    }
    var none = document.getElementById("no-match");
    if (none) none.hidden = shown > 0;
    var note = document.getElementById("search-note");
    if (note) note.hidden = true;
  }

  function onSearch() {
    var input = document.getElementById("q");
    if (!input) return;
    input.addEventListener("input", function () {
      if (!document.getElementById("services")) return;
      filter();
      var url = new URL(window.location.href);
      if (input.value.trim()) url.searchParams.set("q", input.value.trim());
      else url.searchParams.delete("q");
      history.replaceState(null, "", url.toString());
    });
    var form = input.form;
    if (form) form.addEventListener("submit", function (e) {
      // Filter in place only when the page holds every service; else ask the server.
      var list = document.getElementById("services");
      if (list && list.getAttribute("data-all") === "1") { e.preventDefault(); filter(); }
    });
  }

  function editing() {
    var a = document.activeElement;
    return !!(a && a.closest && a.closest("#report-form"));
  }

  function swap() {
    if (busy) return;
    if (editing()) { schedule(5000); return; }
    busy = true;
    fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        busy = false;
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (!fresh || !main) return;
        var oldForm = document.getElementById("report-form");
        var newForm = fresh.querySelector("#report-form");
        if (oldForm && newForm) newForm.replaceWith(oldForm); // keep what the visitor chose
        main.replaceWith(fresh);
        document.body.setAttribute("data-live", doc.body.getAttribute("data-live") || "0");
        document.title = doc.title;
        var foot = doc.querySelector("footer");
        var oldFoot = document.querySelector("footer");
        if (foot && oldFoot) oldFoot.replaceWith(foot);
        lastSwap = Date.now();
        filter();
        document.dispatchEvent(new CustomEvent("outagewatch:updated"));
      })
      .catch(function () { busy = false; });
  }

  function schedule(delay) {
    if (pending !== null) return;
    pending = setTimeout(function () { pending = null; swap(); }, delay);
  }

  function changed(urgent) {
    if (urgent) { schedule(0); return; }
    var live = document.body.getAttribute("data-live") === "1";
    var gap = live ? MIN_GAP_LIVE_MS : MIN_GAP_QUIET_MS;
    schedule(Math.max(0, lastSwap + gap - Date.now()));
  }

  function poll() {
    setInterval(function () { if (!document.hidden) swap(); }, POLL_MS);
  }

  function subscribe() {
    if (!window.EventSource) { poll(); return; }
    var seen = null;
    var seenOngoing = null;
    var failures = 0;
    var timer = null;
    var es = new EventSource("/events");
    es.addEventListener("version", function (e) {
      failures = 0;
      if (timer !== null) { clearInterval(timer); timer = null; }
      var parts = String(e.data).split(" ");
      if (seen !== null && parts[0] !== seen) changed(parts[1] !== seenOngoing);
      seen = parts[0];
      seenOngoing = parts[1];
    });
    es.onerror = function () {
      failures++;
      if (failures >= 3 && timer === null) {
        timer = setInterval(function () { if (!document.hidden) swap(); }, POLL_MS);
      }
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    onSearch();
    filter();
    if (document.getElementById("main")) subscribe();
  });
})();
