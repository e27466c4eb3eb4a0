// Progressive enhancement for the petition page: live count and in-page signing.
// Without JavaScript the form posts to the server and the page still works.
(function () {
  "use strict";
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
    fetch(countUrl, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(showCount)
      .catch(function () {});
  }

  // Live updates over Server-Sent Events; a periodic fetch when the stream is unavailable.
  var polling = null;
  function startPolling() { if (!polling) { poll(); polling = setInterval(poll, 10000); } }
  if (window.EventSource) {
    var stream = new EventSource(countUrl + "/stream");
    // The counter names its events "count".
    stream.addEventListener("count", function (e) { try { showCount(JSON.parse(e.data)); } catch (err) {} });
    stream.onerror = function () { if (stream.readyState === EventSource.CLOSED) startPolling(); };
    poll();
  } else {
    startPolling();
  }

  document.addEventListener("click", function (e) {
    var copy = e.target.closest("[data-copy]");
    if (!copy) return;
    var input = document.getElementById(copy.dataset.copy);
    input.select();
    if (navigator.clipboard) navigator.clipboard.writeText(input.value).catch(function () {});
    copy.textContent = "Copied";
  });

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

  function formError(message) {
    var el = document.getElementById("form-error");
    el.textContent = message;
    el.hidden = !message;
  }

  function shareButtons(url) {
    var text = encodeURIComponent("I signed \u201c" + document.querySelector("h1").textContent + "\u201d. Will you sign too? " + url);
    var links = [
      ["email", "Email", "mailto:?subject=" + encodeURIComponent(document.title) + "&body=" + text],
      ["whatsapp", "WhatsApp", "https://wa.me/?text=" + text],
      ["facebook", "Facebook", "https://www.facebook.com/sharer/sharer.php?u=" + encodeURIComponent(url)],
      ["x", "X", "https://x.com/intent/tweet?text=" + text]
    ];
    var slot = document.getElementById("share-slot");
    slot.innerHTML = "";
    var intro = document.createElement("p");
    intro.append("Link to share: ");
    var input = document.createElement("input");
    input.id = "share-url"; input.readOnly = true; input.value = url;
    input.setAttribute("aria-label", "Link to share");
    intro.append(input);
    slot.append(intro);
    var list = document.createElement("ul");
    list.className = "share-buttons";
    links.forEach(function (l) {
      var a = document.createElement("a");
      a.className = "button"; a.dataset.channel = l[0]; a.href = l[2]; a.textContent = l[1];
      if (l[0] !== "email") { a.target = "_blank"; a.rel = "noopener"; }
      var li = document.createElement("li"); li.append(a); list.append(li);
    });
    var copy = document.createElement("button");
    copy.type = "button"; copy.className = "button"; copy.dataset.copy = "share-url"; copy.textContent = "Copy link";
    var li = document.createElement("li"); li.append(copy); list.append(li);
    slot.append(list);
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
      return r.json().then(function (json) { return { status: r.status, json: json, headers: r.headers }; });
    }).then(function (res) {
      button.disabled = false;
      if (res.status === 202) {
        form.hidden = true;
        var thanks = document.getElementById("thanks");
        document.getElementById("thanks-message").textContent = res.json.message;
        shareButtons(res.json.share_url);
        thanks.hidden = false;
        thanks.focus();
        poll();
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
      // Rate limits, a closed petition, a busy server: said inline, next to the form.
      formError(typeof res.json.detail === "string" ? res.json.detail : "Sorry, something went wrong. Please try again.");
    }).catch(function () {
      // The network failed: fall back to a plain form post, which the server handles too.
      button.disabled = false;
      form.submit();
    });
  });
})();
