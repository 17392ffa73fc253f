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

  for (const form of document.querySelectorAll("form.group")) {
    const tick = (on) => { for (const box of form.querySelectorAll("input[name=paths]")) box.checked = on; };
    const all = form.querySelector(".pick-all");
    const none = form.querySelector(".pick-none");
    if (all) all.addEventListener("click", () => tick(true));
    if (none) none.addEventListener("click", () => tick(false));
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
