// Progressive enhancement: live count, in-page signing, and the share panel's buttons.
// Without JavaScript the form posts to the server and every page still works.
(function () {
  "use strict";

  // --- The share panel (petition page and confirmed page) ------------------------
  // The panel's links are rendered by the server, each tagged with its channel; here
  // only the copy button and the phone's own share sheet need script.
  var webShare = document.getElementById("web-share");
  if (webShare && navigator.share) {
    webShare.hidden = false;
    webShare.addEventListener("click", function () {
      var title = webShare.dataset.title;
      navigator.share({
        title: title,
        text: "I just signed \u201c" + title + "\u201d. Will you sign too?",
        url: webShare.dataset.url
      }).catch(function () {});  // closing the sheet is not an error worth showing
    });
  }

  document.addEventListener("click", function (e) {
    var copy = e.target.closest("[data-copy]");
    if (!copy) return;
    var input = document.getElementById("share-url");
    if (input) input.select();
    var done = function () { copy.textContent = "Copied"; };
    if (navigator.clipboard) navigator.clipboard.writeText(copy.dataset.copy).then(done, done);
    else done();
  });

  // --- The petition: live count -------------------------------------------------
  var page = document.querySelector("article.petition");
  if (!page) return;
  var slug = page.dataset.slug;
  var counter = page.dataset.counter;
  var countUrl = counter + "/api/petitions/" + encodeURIComponent(slug) + "/count";
  var countEl = document.getElementById("count");
  var progress = document.getElementById("progress");

  function showCount(data) {
    if (!data || typeof data.signatures !== "number") return;
    countEl.textContent = data.signatures.toLocaleString("en-GB");
    document.getElementById("count-label").textContent = data.signatures === 1 ? "signature" : "signatures";
    if (progress) {
      if (data.goal) { progress.max = data.goal; document.getElementById("goal").textContent = data.goal.toLocaleString("en-GB"); }
      progress.value = Math.min(data.signatures, progress.max);
    }
  }

  function poll() {
    // Revalidated every time (a 304 is cheap): the count document allows caches to serve
    // it stale while revalidating, which would show every poll the previous poll's count.
    fetch(countUrl, { headers: { Accept: "application/json" }, cache: "no-cache" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(showCount)
      .catch(function () {});
  }

  // Live updates over Server-Sent Events; a periodic fetch while the stream is unavailable.
  // A petition created moments ago may not be known to the counter yet (its stream answers
  // 404): the page polls meanwhile and opens the stream again a little later.
  var polling = null;
  function startPolling() { if (!polling) { poll(); polling = setInterval(poll, 10000); } }
  function stopPolling() { if (polling) { clearInterval(polling); polling = null; } }
  function openStream(attempt) {
    var stream = new EventSource(countUrl + "/stream");
    // The counter names its events "count".
    stream.addEventListener("count", function (e) { try { showCount(JSON.parse(e.data)); } catch (err) {} });
    stream.onopen = stopPolling;
    stream.onerror = function () {
      if (stream.readyState !== EventSource.CLOSED) return;  // the browser reconnects itself
      startPolling();
      if (attempt < 5) setTimeout(function () { openStream(attempt + 1); }, 5000);
    };
  }
  if (window.EventSource) {
    openStream(0);
    poll();
  } else {
    startPolling();
  }

  // --- The petition: signing in the page ------------------------------------------
  var form = document.getElementById("sign-form");
  if (!form) return;

  function setError(field, message) {
    var el = document.getElementById(field + "-error");
    var input = document.getElementById(field);
    if (!el || !input) return false;
    el.textContent = message || "";
    el.hidden = !message;
    if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    input.closest(".field").classList.toggle("has-error", !!message);
    return true;
  }

  // Every error the server gives is said here, beside the form (never in an alert box).
  function formError(message) {
    var el = document.getElementById("form-error");
    el.textContent = message;
    el.hidden = !message;
    if (message) el.scrollIntoView({ block: "nearest" });
  }

  function retryText(headers) {
    var seconds = parseInt(headers.get("Retry-After") || "", 10);
    return seconds > 0 ? " Please try again in " + seconds + " seconds." : " Please try again shortly.";
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var data = new FormData(form);
    if (data.get("website")) return;
    ["name", "email", "postcode", "country"].forEach(function (f) { setError(f, ""); });
    formError("");
    var body = {
      name: data.get("name") || "", email: data.get("email") || "",
      postcode: data.get("postcode") || null, country: data.get("country") || "GB",
      contact_consent: data.get("contact_consent") === "yes",
      ref: data.get("ref") || null, source: data.get("source") || null,
      ref_channel: data.get("ref_channel") || null
    };
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    fetch("/api/petitions/" + encodeURIComponent(slug) + "/signatures", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
    }).then(function (r) {
      // A proxy's error page is not JSON: still an answer, said inline below.
      return r.json().catch(function () { return {}; }).then(function (json) {
        return { status: r.status, json: json, headers: r.headers };
      });
    }).then(function (res) {
      button.disabled = false;
      if (res.status === 202) {
        form.hidden = true;
        var thanks = document.getElementById("thanks");
        document.getElementById("thanks-message").textContent = res.json.message;
        thanks.hidden = false;
        thanks.focus();
        // The new count reaches the counter a moment after this answer. The stream should
        // bring it, but a stream that missed it would leave the page showing the old count
        // while the signer watches: a few polls over the next seconds make sure.
        [0, 1000, 3000, 7000].forEach(function (ms) { setTimeout(poll, ms); });
        return;
      }
      if (res.status === 422 && Array.isArray(res.json.detail)) {
        var first = null;
        res.json.detail.forEach(function (d) {
          var field = d.loc[d.loc.length - 1];
          if (setError(field, d.msg) && !first) first = field;
        });
        if (first) { document.getElementById(first).focus(); return; }
      }
      // Rate limits (429), a closed petition (409), a busy server (503): their own words.
      var detail = typeof res.json.detail === "string" ? res.json.detail : "";
      formError(detail || "Sorry, we could not take your signature." + retryText(res.headers));
    }).catch(function () {
      // The network failed: fall back to a plain form post, which the server handles too.
      button.disabled = false;
      form.submit();
    });
  });
})();
