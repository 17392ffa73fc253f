// landmark-search web app: drag and drop on the search page, Grad-CAM on request, select all/none and the grouping's
// progress on the review page. Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const drop = document.getElementById("search");
  const input = document.getElementById("file");
  if (drop && input) {
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    for (const type of ["dragleave", "drop"]) {
      drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
    }
    drop.addEventListener("drop", (e) => {
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        drop.submit();
      }
    });
    input.addEventListener("change", () => { if (input.files.length) drop.submit(); });
  }

  const explain = document.getElementById("explain");
  if (explain) {
    explain.addEventListener("click", (e) => {
      e.preventDefault();
      const img = document.getElementById(explain.dataset.target);
      explain.textContent = "Computing Grad-CAM…";
      img.onload = () => { img.hidden = false; explain.textContent = "Grad-CAM: where the evidence is"; };
      img.onerror = () => { explain.textContent = "Grad-CAM failed for this photo"; };
      img.src = explain.href;
    });
  }

  // Select all / none: a review group's boxes, or on the library page every tile box of the form "pick".
  for (const button of document.querySelectorAll("button.pick-all, button.pick-none")) {
    const group = button.closest("form.group");
    const boxes = () => (group ? group.querySelectorAll("input[name=paths]")
                               : document.querySelectorAll('input[form="pick"][name=paths]'));
    const on = button.classList.contains("pick-all");
    button.addEventListener("click", () => { for (const box of boxes()) box.checked = on; });
  }

  // The photo page: the left and right arrow keys go to the previous and next photo of the listing, unless
  // the key is meant for a field (typing a landmark name) or comes with a modifier (the browser's own keys).
  const large = document.getElementById("large");
  if (large) {
    document.addEventListener("keydown", (e) => {
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey || e.target.closest("input, textarea, select")) return;
      const link = document.getElementById(e.key === "ArrowLeft" ? "prev" : e.key === "ArrowRight" ? "next" : "");
      if (link) window.location.href = link.href;
    });
  }

  // Filters apply as soon as they are picked with the pointer; from the keyboard, arrows only move through
  // the choices and Enter or the Go button applies them (a list that reloads on every arrow key is unusable).
  for (const control of document.querySelectorAll("[data-auto]")) {
    let pointer = control.type === "checkbox";
    control.addEventListener("pointerdown", () => { pointer = true; });
    control.addEventListener("keydown", (e) => {
      pointer = control.type === "checkbox";
      if (e.key === "Enter") control.form.requestSubmit();
    });
    control.addEventListener("change", () => { if (pointer) control.form.submit(); });
  }

  const computing = document.getElementById("computing");
  if (computing) {
    const bar = computing.querySelector("progress");
    const poll = () => {
      fetch(computing.dataset.poll, { headers: { Accept: "application/json" } })
        .then((r) => r.json())
        .then((state) => {
          if (state.state === "computing") {
            bar.value = state.progress;
            setTimeout(poll, 1000);
          } else {
            window.location.reload();
          }
        })
        .catch(() => setTimeout(poll, 3000));
    };
    setTimeout(poll, 1000);
  }
});
