// The console's one script: elements with data-refresh="<url>" reload their contents
// from that URL every data-every seconds (the server renders the fragment). Without it,
// every page still works; it only stops refreshing.
(function () {
  "use strict";
  function refresh(box) {
    var every = Math.max(1, Number(box.getAttribute("data-every")) || 5) * 1000;
    var status = document.querySelector("[data-refresh-status]");
    function tick() {
      fetch(box.getAttribute("data-refresh"), { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          // Our own server-rendered fragment: every stored value in it is escaped.
          box.innerHTML = html;
          if (status) { status.textContent = "updated " + new Date().toLocaleTimeString(); }
        })
        .catch(function (error) {
          if (status) { status.textContent = "refresh failed (" + error.message + "), retrying"; }
        })
        .finally(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });
})();
