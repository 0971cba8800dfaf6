/*
 * live.js: keep a page's view of a media in step with ittybit-pipeline, without reloads.
 * No dependencies, no build step: copy it into your app's static files.
 *
 *   const watch = IttybitLive.watch({
 *     media: 42,                 // the media's id
 *     token: "…",                // from pipeline.live_token(email), minted by your app
 *     base: "",                  // where the pipeline's web answers ("" = this origin)
 *     root: document,            // where the data-field elements are
 *     onChange(status) {},       // optional: called with the status API's JSON
 *     onState(state) {},         // optional: "live", "reconnecting", "polling", "refused"
 *   });
 *   watch.close();
 *
 * Inside `root`, it fills the elements marked data-field="status" (text), "output" (a
 * link), "thumbnail" (an <img>) and "error" (text); those without a value are hidden.
 * It listens on the Server-Sent Events stream (/api/stream?media=…); the browser
 * reconnects by itself and the pipeline replays what changed meanwhile (Last-Event-ID).
 * When the stream cannot connect, it polls the status API (/api/media/<id>) every few
 * seconds until the stream is back. Updates older than what is shown are ignored.
 */
(function (global) {
  "use strict";

  var POLL_MS = 2000;
  var FALLBACK_AFTER_MS = 3000; // a stream not open by then: poll meanwhile

  function watch(options) {
    var media = String(options.media);
    var token = options.token || "";
    var base = options.base || "";
    var root = options.root || document;
    var shown = -1; // the version on screen
    var source = null;
    var pollTimer = null;
    var polling = false; // a poll in flight or scheduled: one polling loop at a time
    var fallbackTimer = null;
    var closed = false;
    var query = "media=" + encodeURIComponent(media) + "&token=" + encodeURIComponent(token);

    function setState(state) {
      var el = root.querySelector('[data-field="connection"]');
      if (el) el.textContent = state;
      if (options.onState) options.onState(state);
    }

    function show(name, value, apply) {
      var elements = root.querySelectorAll('[data-field="' + name + '"]');
      for (var i = 0; i < elements.length; i++) {
        elements[i].hidden = value === null || value === undefined || value === "";
        if (!elements[i].hidden) apply(elements[i], value);
      }
    }

    function render(status) {
      if (typeof status.version !== "number" || status.version <= shown) return;
      shown = status.version;
      show("status", status.status, function (el, v) { el.textContent = v; });
      show("output", status.output_url, function (el, v) { el.href = v; el.textContent = v; });
      show("thumbnail", status.thumbnail_url, function (el, v) {
        if (el.getAttribute("src") !== v) el.src = v;
      });
      show("error", status.error, function (el, v) { el.textContent = v; });
      var card = root.querySelector("[data-media]");
      if (card) card.setAttribute("data-status", status.status);
      if (options.onChange) options.onChange(status);
      (root.dispatchEvent ? root : document).dispatchEvent(
        new CustomEvent("ittybit:media", { detail: status })
      );
    }

    function poll() {
      pollTimer = null;
      if (closed) { polling = false; return; }
      fetch(base + "/api/media/" + encodeURIComponent(media), {
        headers: { Authorization: "Bearer " + token },
        cache: "no-store",
      })
        .then(function (response) {
          if (response.status === 401 || response.status === 404) {
            setState("refused");
            closed = true;
            return null;
          }
          return response.ok ? response.json() : null;
        })
        .then(function (status) { if (status) render(status); })
        .catch(function () {})
        .then(function () {
          if (!closed && !(source && source.readyState === 1)) {
            pollTimer = setTimeout(poll, POLL_MS);
          } else {
            polling = false;
          }
        });
    }

    function startPolling() {
      if (closed || polling) return;
      polling = true;
      setState("polling");
      poll();
    }

    function connect() {
      if (closed) return;
      source = new EventSource(base + "/api/stream?" + query);
      fallbackTimer = setTimeout(startPolling, FALLBACK_AFTER_MS);
      source.onopen = function () {
        clearTimeout(fallbackTimer);
        if (pollTimer !== null) { clearTimeout(pollTimer); pollTimer = null; polling = false; }
        setState("live");
      };
      source.addEventListener("media", function (event) {
        render(JSON.parse(event.data));
      });
      source.onerror = function () {
        if (source.readyState === 2) {
          // Refused (401, 404, 503) or not a stream: poll, and try the stream again later.
          startPolling();
          setTimeout(function () { if (!closed) connect(); }, 10 * POLL_MS);
        } else {
          setState("reconnecting");
          clearTimeout(fallbackTimer);
          fallbackTimer = setTimeout(startPolling, FALLBACK_AFTER_MS);
        }
      };
    }

    connect();
    return {
      close: function () {
        closed = true;
        if (source) source.close();
        clearTimeout(pollTimer);
        clearTimeout(fallbackTimer);
      },
      render: render,
    };
  }

  global.IttybitLive = { watch: watch };
})(window);
