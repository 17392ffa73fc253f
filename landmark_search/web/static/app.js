// landmark-search web app: drag and drop on the search page, Grad-CAM on request. Every page works without it.
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
});
