// Progressive enhancement for the console's overview: every few seconds, fetch
// /api/v1/status (the session cookie goes with it) and update the counts and states
// in place; say "daemon unreachable" while the fetch fails. The pages work without it.
(function () {
  "use strict";
  var overview = document.getElementById("overview");
  var banner = document.getElementById("reachability");
  if (!overview || !banner) {
    return;
  }
  function set(row, field, value) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell) {
      cell.textContent = value === null || value === undefined ? "\u2014" : String(value);
    }
  }
  function update(doc) {
    (doc.sinks || []).forEach(function (sink) {
      var row = overview.querySelector('tr[data-sink="' + CSS.escape(sink.name) + '"]');
      if (!row) { return; }
      ["state", "pending", "failed", "held", "dead", "delivered", "last_success_at",
       "oldest_pending_seconds"].forEach(function (f) { set(row, f, sink[f]); });
    });
    (doc.triggers || []).forEach(function (t) {
      var name = t.account + "/" + t.trigger;
      var row = overview.querySelector('tr[data-trigger="' + CSS.escape(name) + '"]');
      if (!row) { return; }
      ["state", "last_poll_at", "last_outcome", "items_known", "last_error"].forEach(
        function (f) { set(row, f, t[f]); });
    });
  }
  function poll() {
    fetch("/api/v1/status", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (doc) { banner.hidden = true; update(doc); })
      .catch(function () { banner.hidden = false; });
  }
  setInterval(poll, 5000);
})();
