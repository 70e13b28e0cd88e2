// Progressive enhancement for the console's pages (they work without it). Every 5 s,
// with the session cookie, from the admin API:
// - the overview (#overview): /api/v1/status, the counts and states updated in place;
// - the events list's first page (#events[data-live]): /api/v1/events with the page's
//   filters, new events added at the top, the deliveries of those shown updated;
// - an event's page (#event[data-live]): /api/v1/events/ID, each delivery's status,
//   next attempt and attempts updated.
// While a fetch fails the header says "daemon unreachable" (or that the session ended).
// Upstream values only ever go in as text (textContent), never as HTML.
(function () {
  "use strict";
  var EVERY = 5000;
  var banner = document.getElementById("reachability");
  var overview = document.getElementById("overview");
  var events = document.getElementById("events");
  var event = document.getElementById("event");
  var url = null;
  var update = null;

  function text(value) {
    return value === null || value === undefined ? "\u2014" : String(value);
  }
  function set(root, field, value) {
    var cell = root.querySelector('[data-field="' + field + '"]');
    if (cell) { cell.textContent = text(value); }
  }
  function el(tag, value) {
    var node = document.createElement(tag);
    if (value !== undefined) { node.textContent = text(value); }
    return node;
  }

  function updateOverview(doc) {
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
      ["state", "last_poll_at", "last_outcome", "next_poll_at", "items_known", "last_error"].forEach(
        function (f) { set(row, f, t[f]); });
    });
  }

  function deliveries(ev) {
    return (ev.deliveries || []).map(function (d) {
      return d.sink + ": " + d.status + " (" + d.attempts + ")";
    }).join(", ");
  }
  function eventRow(ev) {
    var row = el("tr");
    row.setAttribute("data-event", ev.id);
    var box = el("input");
    box.type = "checkbox";
    box.name = "event";
    box.value = ev.id;
    box.setAttribute("form", "replay-selected");
    box.setAttribute("aria-label", "select");
    var first = el("td");
    first.appendChild(box);
    row.appendChild(first);
    var link = el("a", ev.id);
    link.href = "/events/" + encodeURIComponent(ev.id);
    var id = el("td");
    id.appendChild(link);
    row.appendChild(id);
    [ev.created_at, ev.type, ev.account, ev.key].forEach(function (v) {
      row.appendChild(el("td", v));
    });
    var cell = el("td", deliveries(ev));
    cell.setAttribute("data-field", "deliveries");
    row.appendChild(cell);
    row.className = "new";
    return row;
  }
  function updateEvents(doc) {
    var body = events.tBodies[0];
    var shown = {};
    Array.prototype.forEach.call(body.rows, function (row) {
      shown[row.getAttribute("data-event")] = row;
    });
    var top = body.firstChild;
    (doc.events || []).forEach(function (ev) {
      var row = shown[ev.id];
      if (row) {
        set(row, "deliveries", deliveries(ev));
      } else {  // newer than those shown: newest first, above them
        body.insertBefore(eventRow(ev), top);
      }
    });
    var none = document.getElementById("no-events");
    if (none && body.rows.length) { none.remove(); }
  }

  function attemptRow(a) {
    var row = el("tr");
    [a.attempt, a.started_at, a.status_code, a.latency_ms, a.error].forEach(function (v) {
      row.appendChild(el("td", v));
    });
    var answer = el("td");
    answer.appendChild(el("pre", (a.response_body || "").slice(0, 1024)));
    row.appendChild(answer);
    return row;
  }
  function updateEvent(doc) {
    (doc.deliveries || []).forEach(function (d) {
      var part = document.querySelector('section[data-delivery="' + CSS.escape(d.sink) + '"]');
      if (!part) { return; }
      var status = part.querySelector("span.status");
      if (status) { status.textContent = text(d.status); }
      set(part, "next_attempt_at", d.next_attempt_at);
      set(part, "delivered_at", d.delivered_at);
      var body = part.querySelector("tbody");
      if (body && body.rows.length !== (d.attempt_log || []).length) {
        body.replaceChildren.apply(body, (d.attempt_log || []).map(attemptRow));
      }
    });
  }

  if (overview) {
    url = "/api/v1/status";
    update = updateOverview;
  } else if (events && events.getAttribute("data-live")) {
    url = events.getAttribute("data-live");
    update = updateEvents;
  } else if (event && event.getAttribute("data-live")) {
    url = event.getAttribute("data-live");
    update = updateEvent;
  }
  if (!banner || !url) { return; }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          banner.textContent = "session ended: log in again";
          banner.hidden = false;
          return null;
        }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (doc) {
        if (doc === null) { return; }
        banner.hidden = true;
        update(doc);
      })
      .catch(function () {
        banner.textContent = "daemon unreachable";
        banner.hidden = false;
      });
  }
  setInterval(poll, EVERY);
})();
