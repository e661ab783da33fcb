// predictd console: the playground form, live progress over Server-Sent Events, copy buttons, code tabs.
// Everything from the server is put into the page with textContent or as an <img> src that was checked
// first; nothing is ever assigned to innerHTML.
"use strict";

(function () {
  const IMAGE_DATA = /^data:image\/(png|jpeg|webp);base64,/;
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function isImage(value) {
    return typeof value === "string" &&
      (IMAGE_DATA.test(value) || value.startsWith(window.location.origin + "/v1/outputs/"));
  }

  function images(value, found) {
    if (isImage(value)) found.push(value);
    else if (Array.isArray(value)) value.forEach((v) => images(v, found));
    else if (value && typeof value === "object") Object.values(value).forEach((v) => images(v, found));
    return found;
  }

  function shorten(value) {
    if (typeof value === "string" && value.length > 120) return value.slice(0, 120) + "… (" + value.length + " characters)";
    if (Array.isArray(value)) return value.map(shorten);
    if (value && typeof value === "object") {
      const out = {};
      for (const [k, v] of Object.entries(value)) out[k] = shorten(v);
      return out;
    }
    return value;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "—";
    return value < 1 ? Math.round(value * 1000) + " ms" : value.toFixed(2) + " s";
  }

  function setStatus(element, status) {
    element.textContent = status;
    element.className = "status status-" + status;
  }

  // Follows a prediction's stream; calls onUpdate(body, event) for each event, onEnd(body) after "done".
  function follow(url, onUpdate, onEnd, onError) {
    const source = new EventSource(url);
    let last = null;
    for (const name of ["status", "output"]) {
      source.addEventListener(name, (event) => { last = JSON.parse(event.data); onUpdate(last, name); });
    }
    source.addEventListener("done", (event) => {
      source.close();
      last = JSON.parse(event.data);
      onUpdate(last, "done");
      onEnd(last);
    });
    source.onerror = () => {
      // EventSource reconnects by itself (resuming with Last-Event-ID); give up only once it is closed.
      if (source.readyState === EventSource.CLOSED) onError("The progress stream was closed.");
    };
    return source;
  }

  // -- the playground -----------------------------------------------------------------------------------

  function readFile(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("could not read " + file.name));
      reader.readAsDataURL(file);
    });
  }

  async function collect(form) {
    const input = {};
    for (const field of form.querySelectorAll("[data-field]")) {
      const name = field.dataset.name;
      const kind = field.dataset.kind;
      const control = field.querySelector("#in-" + CSS.escape(name));
      if (kind === "boolean") {
        // Left at its default, a box is not sent: the model's own default applies.
        if (String(control.checked) !== control.dataset.default) input[name] = control.checked;
        continue;
      }
      if (kind === "image") {
        const url = field.querySelector(".image-url").value.trim();
        if (control.files.length) input[name] = await readFile(control.files[0]);
        else if (url) input[name] = url;
        continue;
      }
      const raw = control.value;
      if (raw === "") continue; // unset: the model's default applies (a missing required one is reported)
      if (kind === "integer" || kind === "number") input[name] = Number(raw);
      else if (kind === "enum" || kind === "json") {
        try { input[name] = JSON.parse(raw); } catch (e) { throw new Error(name + ": not valid JSON"); }
      } else input[name] = raw;
    }
    return input;
  }

  function playground(form) {
    const view = document.getElementById("run-view");
    const status = document.getElementById("run-status");
    const log = document.getElementById("run-log");
    const elapsed = document.getElementById("run-elapsed");
    const link = document.getElementById("run-link");
    const errorBox = document.getElementById("run-error");
    const output = document.getElementById("run-output");
    const gallery = document.getElementById("run-images");
    const metrics = document.getElementById("run-metrics");
    const button = document.getElementById("run");
    let timer = null;
    let source = null;

    for (const file of form.querySelectorAll('input[type="file"]')) {
      file.addEventListener("change", async () => {
        const preview = document.getElementById(file.id + "-preview");
        if (!file.files.length) { preview.hidden = true; return; }
        preview.src = await readFile(file.files[0]);
        preview.hidden = false;
      });
    }

    function note(text) {
      const item = document.createElement("li");
      const at = document.createElement("time");
      at.textContent = new Date().toISOString().slice(11, 23);
      item.append(at, " ", text);
      item.dataset.step = text;
      log.append(item);
    }

    function showError(name, id, message) {
      errorBox.hidden = false;
      document.getElementById("run-error-name").textContent = name || "";
      document.getElementById("run-error-id").textContent = id || "";
      document.getElementById("run-error-message").textContent = message || "";
    }

    function show(body) {
      setStatus(status, body.status);
      if (body.error || body.error_name) showError(body.error_name, body.error_id, body.error);
      gallery.replaceChildren();
      for (const src of images(body.output, [])) {
        const img = document.createElement("img");
        img.className = "shot";
        img.alt = "output image";
        img.src = src;
        gallery.append(img);
      }
      if (body.output !== null && body.output !== undefined) {
        output.hidden = false;
        output.textContent = JSON.stringify(shorten(body.output), null, 2);
      }
      if (body.credits_used !== null && body.credits_used !== undefined) {
        metrics.hidden = false;
        document.getElementById("run-predict-time").textContent = seconds(body.metrics.predict_time);
        document.getElementById("run-credits").textContent = String(body.credits_used);
      }
    }

    function finish() {
      if (timer) clearInterval(timer);
      timer = null;
      button.disabled = false;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (source) source.close();
      document.getElementById("run-idle").hidden = true;
      view.hidden = false;
      log.replaceChildren();
      gallery.replaceChildren();
      errorBox.hidden = true;
      output.hidden = true;
      metrics.hidden = true;
      link.hidden = true;
      setStatus(status, "submitting");
      button.disabled = true;
      const started = performance.now();
      timer = setInterval(() => {
        elapsed.textContent = ((performance.now() - started) / 1000).toFixed(1) + " s";
      }, 100);
      let answer;
      try {
        const input = await collect(form);
        const response = await fetch(form.dataset.run, {
          method: "POST",
          credentials: "same-origin",
          headers: { "content-type": "application/json", "x-csrf-token": csrf() },
          body: JSON.stringify({ input }),
        });
        answer = await response.json();
        if (!response.ok) {
          setStatus(status, "refused");
          showError(answer.error_id, "HTTP " + response.status, answer.message);
          finish();
          return;
        }
      } catch (error) {
        setStatus(status, "refused");
        showError("Error", "", error.message);
        finish();
        return;
      }
      link.href = answer.page;
      link.hidden = false;
      showSnippets(answer.snippets);
      note(answer.prediction.status);
      show(answer.prediction);
      let previous = answer.prediction.status;
      source = follow(
        answer.stream,
        (body, name) => {
          if (body.status !== previous || name === "done") {
            if (body.status !== previous) note(body.status);
            previous = body.status;
          }
          show(body);
        },
        () => finish(),
        (message) => { showError("StreamError", "", message); finish(); },
      );
    });
  }

  // The code that runs this very prediction again, in the tabs the page has for it.
  function showSnippets(snippets) {
    const section = document.getElementById("code");
    if (!section) return;
    for (const snippet of snippets || []) {
      const code = document.getElementById("code-" + snippet.language);
      if (code) code.textContent = snippet.code;
    }
    section.hidden = !snippets || snippets.length === 0;
  }

  // -- a prediction's page while it runs ------------------------------------------------------------------

  function livePage(element) {
    const badge = document.getElementById("live-status");
    follow(
      element.dataset.stream,
      (body) => setStatus(badge, body.status),
      () => window.location.reload(),
      () => {},
    );
  }

  function confirmForms() {
    for (const form of document.querySelectorAll("form[data-confirm]")) {
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    }
  }

  // -- copy buttons and tabs -------------------------------------------------------------------------------

  // The Clipboard API needs a secure context (https, or localhost); a console reached over plain http on
  // another host copies through a selected, off-screen text area instead.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise((resolve, reject) => {
      const area = document.createElement("textarea");
      area.value = text;
      area.readOnly = true;
      area.className = "offscreen";
      document.body.append(area);
      area.select();
      const copied = document.execCommand("copy");
      area.remove();
      if (copied) resolve(); else reject(new Error("copying was refused"));
    });
  }

  // <button class="copy" data-copy="text"> copies its text; data-copy-from="id", the element's value or text.
  function copyButtons() {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button.copy");
      if (!button) return;
      let text = button.dataset.copy;
      if (text === undefined) {
        const source = document.getElementById(button.dataset.copyFrom);
        text = source ? (source.value !== undefined ? source.value : source.textContent) : "";
      }
      const label = button.dataset.label || button.textContent;
      button.dataset.label = label;
      const mark = (state, caption) => {
        button.classList.remove("copied", "failed");
        if (state) button.classList.add(state);
        button.textContent = caption;
        clearTimeout(button.copyTimer);
        button.copyTimer = setTimeout(() => {
          button.classList.remove("copied", "failed");
          button.textContent = label;
        }, 2000);
      };
      copyText(text).then(() => mark("copied", "Copied"), () => mark("failed", "Copy failed"));
    });
  }

  function tabs() {
    for (const list of document.querySelectorAll(".tabs")) {
      const buttons = [...list.querySelectorAll("[data-tab]")];
      for (const button of buttons) {
        button.addEventListener("click", () => {
          for (const other of buttons) {
            other.setAttribute("aria-selected", String(other === button));
            document.getElementById(other.dataset.tab).hidden = other !== button;
          }
        });
      }
    }
  }

  function selectSecret() {
    const secret = document.getElementById("new-key");
    if (secret) { secret.focus(); secret.select(); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("playground");
    if (form) playground(form);
    const live = document.getElementById("live");
    if (live) livePage(live);
    confirmForms();
    copyButtons();
    tabs();
    selectSecret();
  });
})();
