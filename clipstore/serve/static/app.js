// clipstore serve: what htmx does not do by itself. Keyboard use of the results grid, dropping or pasting a
// query image, and closing the detail pane. No inline scripts: the page's Content-Security-Policy allows only
// the server's own files.
(function () {
  "use strict";

  const $ = (selector) => document.querySelector(selector);
  const tiles = () => Array.from(document.querySelectorAll("#grid .hit"));

  // Results in a grid: how many tiles fit on one row right now (it changes with the window's width).
  function columns(list) {
    if (list.length < 2) return 1;
    const top = list[0].getBoundingClientRect().top;
    const inFirstRow = list.findIndex((tile) => tile.getBoundingClientRect().top > top + 2);
    return inFirstRow === -1 ? list.length : inFirstRow;
  }

  function moveFrom(current, key) {
    const list = tiles();
    const at = list.indexOf(current);
    if (at === -1) return false;
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(list), ArrowUp: -columns(list) }[key];
    const next = at + step;
    if (next < 0 && key === "ArrowUp") {
      $("#q").focus();
      return true;
    }
    if (next < 0 || next >= list.length) return true; // stay at the edge
    list[next].focus();
    list[next].scrollIntoView({ block: "nearest" });
    return true;
  }

  function closeDetail() {
    const card = $("#detail-card");
    if (!card) return;
    const id = card.dataset.id;
    $("#detail").replaceChildren();
    document.body.classList.remove("detail-open");
    const tile = tiles().find((t) => t.dataset.id === id);
    if (tile) tile.focus();
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target.matches && target.matches("input, textarea, select");
    if (event.key === "Escape" && $("#detail-card")) {
      event.preventDefault();
      closeDetail();
      return;
    }
    if (event.key === "/" && !typing) {
      event.preventDefault();
      $("#q").focus();
      return;
    }
    if (target.classList && target.classList.contains("hit") && event.key.startsWith("Arrow")) {
      if (moveFrom(target, event.key)) event.preventDefault();
      return;
    }
    if (target.id === "q" && event.key === "ArrowDown" && tiles().length) {
      event.preventDefault();
      tiles()[0].focus();
    }
  });

  // A result opens in the detail pane (htmx fetches it); a plain click must not follow the link to the file.
  document.addEventListener("click", (event) => {
    const hit = event.target.closest && event.target.closest("#grid .hit");
    if (hit && !event.ctrlKey && !event.metaKey && !event.shiftKey) event.preventDefault();
    if (event.target.closest && event.target.closest("#detail .close")) closeDetail();
  });

  document.addEventListener("htmx:after:swap", (event) => {
    const target = event.target;
    if (target && target.id === "detail" && $("#detail-card")) document.body.classList.add("detail-open");
    if (target && target.id === "query-image") input().value = ""; // the same file can be chosen again
  });

  // Dropping or pasting an image anywhere on the page uploads it as the query image (the upload form's change).
  const input = () => $("#image-input");
  function upload(files) {
    if (!files || !files.length) return;
    const transfer = new DataTransfer();
    transfer.items.add(files[0]);
    input().files = transfer.files;
    input().dispatchEvent(new Event("change", { bubbles: true }));
  }
  document.addEventListener("dragover", (event) => {
    if (event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files")) {
      event.preventDefault();
      document.body.classList.add("dragging");
    }
  });
  document.addEventListener("dragleave", (event) => {
    if (event.target === document.documentElement || event.relatedTarget === null) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    if (!event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    document.body.classList.remove("dragging");
    upload(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    const files = event.clipboardData ? event.clipboardData.files : null;
    if (files && files.length) {
      event.preventDefault();
      upload(files);
    }
  });
})();
