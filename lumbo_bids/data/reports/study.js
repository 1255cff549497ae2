// lumbo_bids study QC page (inlined into OUTPUT_DIR/qc/index.html; no network, no writes but
// the browser's localStorage). Ratings are keyed by dataset + image; "Export ratings" downloads
// them as the TSV that `lumbo-bids ... group --qc-ratings FILE` reads.
(function () {
  "use strict";
  const RATINGS = ["pass", "fail", "unrated"];
  const body = document.body;
  const dataset = body.dataset.dataset || "unnamed dataset";
  const table = document.getElementById("images");
  const tbody = table.tBodies[0];
  const cardsBox = document.getElementById("cards");
  const memory = {}; // fallback when localStorage is unavailable
  let storageOk = true;
  let current = 0;

  function storageKey(image) { return "lumbo_bids.qc|" + dataset + "|" + image; }

  function load(image) {
    let text = null;
    try { text = window.localStorage.getItem(storageKey(image)); } catch (e) { storageOk = false; }
    if (text === null) text = memory[image] || null;
    try { return text ? JSON.parse(text) : { rating: "unrated", note: "" }; } catch (e) { return { rating: "unrated", note: "" }; }
  }

  function save(image, value) {
    const text = JSON.stringify({ rating: value.rating, note: value.note, time: new Date().toISOString() });
    memory[image] = text;
    try { window.localStorage.setItem(storageKey(image), text); } catch (e) { storageOk = false; }
    document.getElementById("storage-warning").hidden = storageOk;
  }

  function rows() { return Array.from(tbody.rows); }
  function cardOf(row) { return document.getElementById(row.dataset.target); }
  function rowOf(card) { return document.getElementById("row-" + card.id.slice(4)); }

  function show(card) {
    const value = load(card.dataset.image);
    const row = rowOf(card);
    for (const el of [card, row]) {
      RATINGS.forEach(function (r) { el.classList.toggle("rated-" + r, value.rating === r); });
    }
    card.querySelector(".state").textContent = value.rating;
    row.querySelector("td.rating").textContent = value.rating;
    row.dataset.rating = value.rating;
    const note = card.querySelector("textarea.note");
    if (document.activeElement !== note) note.value = value.note;
  }

  function counts() {
    const n = { pass: 0, fail: 0, unrated: 0 };
    rows().forEach(function (row) { n[row.dataset.rating || "unrated"] += 1; });
    document.getElementById("counts").textContent = n.pass + " pass · " + n.fail + " fail · " + n.unrated + " unrated";
  }

  function rate(card, rating) {
    const value = load(card.dataset.image);
    value.rating = rating;
    save(card.dataset.image, value);
    show(card);
    counts();
  }

  function go(index, scroll) {
    const all = rows();
    if (!all.length) return;
    current = Math.max(0, Math.min(all.length - 1, index));
    all.forEach(function (row, i) {
      row.classList.toggle("current", i === current);
      cardOf(row).classList.toggle("current", i === current);
    });
    if (scroll !== false) {
      const top = cardOf(all[current]).getBoundingClientRect().top + window.scrollY;
      window.scrollTo(0, top - document.querySelector("header").offsetHeight - 8);
    }
    document.getElementById("position").textContent = (current + 1) + " / " + all.length;
  }

  function currentCard() { const all = rows(); return all.length ? cardOf(all[current]) : null; }

  function setOverlay(on) {
    body.classList.toggle("no-overlay", !on);
    document.getElementById("overlay").checked = on;
  }

  function sortValue(row, key, type) {
    const raw = row.dataset[key];
    if (type === "text") return raw || "";
    const number = parseFloat(raw);
    return isNaN(number) ? null : number;
  }

  function sortBy(th) {
    const key = th.dataset.key;
    const type = th.dataset.type || "number";
    const descending = th.classList.contains("sorted-asc");
    const keep = currentCard();
    const sorted = rows().map(function (row, i) { return [sortValue(row, key, type), i, row]; });
    sorted.sort(function (a, b) {
      if (a[0] === null || b[0] === null) return a[0] === b[0] ? a[1] - b[1] : (a[0] === null ? 1 : -1); // missing last
      const order = type === "text" ? a[0].localeCompare(b[0]) : a[0] - b[0];
      return (descending ? -order : order) || a[1] - b[1];
    });
    sorted.forEach(function (item) { tbody.appendChild(item[2]); cardsBox.appendChild(cardOf(item[2])); });
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
    th.classList.add(descending ? "sorted-desc" : "sorted-asc");
    go(keep ? rows().indexOf(rowOf(keep)) : 0, false);
  }

  function exportRatings() {
    const lines = ["image\trating\tmodel\tnote"];
    const cards = Array.from(document.querySelectorAll(".card")).sort(function (a, b) { return a.dataset.order - b.dataset.order; });
    cards.forEach(function (card) {
      const value = load(card.dataset.image);
      // model: which model made the rated mask, so that a mask made since by another one is not taken as rated
      lines.push([card.dataset.image, value.rating, card.dataset.model || "", (value.note || "").replace(/\s+/g, " ").trim()].join("\t"));
    });
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/tab-separated-values" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "qc_ratings_" + dataset.replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 60) + ".tsv";
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.tagName === "TEXTAREA" || target.tagName === "INPUT") {
      if (event.key === "Escape") target.blur();
      return;
    }
    const card = currentCard();
    const actions = {
      j: function () { go(current + 1); }, ArrowDown: function () { go(current + 1); }, ArrowRight: function () { go(current + 1); },
      k: function () { go(current - 1); }, ArrowUp: function () { go(current - 1); }, ArrowLeft: function () { go(current - 1); },
      o: function () { setOverlay(body.classList.contains("no-overlay")); },
      p: function () { if (card) rate(card, "pass"); },
      f: function () { if (card) rate(card, "fail"); },
      u: function () { if (card) rate(card, "unrated"); },
      n: function () { if (card) { card.querySelector("textarea.note").focus({ preventScroll: true }); } },
    };
    if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
  }

  // the figures fit the window's height less the header's and a card's title, numbers and rating
  function fitFigures() {
    const chrome = document.querySelector("header").offsetHeight + 130;
    document.documentElement.style.setProperty("--chrome", chrome + "px");
  }

  function wire() {
    fitFigures();
    window.addEventListener("resize", fitFigures);
    rows().forEach(function (row) {
      const card = cardOf(row);
      row.addEventListener("click", function () { go(rows().indexOf(row)); });
      card.addEventListener("click", function () { go(rows().indexOf(row), false); });
      card.querySelector("button.pass").addEventListener("click", function () { rate(card, "pass"); });
      card.querySelector("button.fail").addEventListener("click", function () { rate(card, "fail"); });
      card.querySelector("textarea.note").addEventListener("input", function (event) {
        const value = load(card.dataset.image);
        value.note = event.target.value;
        save(card.dataset.image, value);
      });
      show(card);
    });
    table.querySelectorAll("th[data-key]").forEach(function (th) { th.addEventListener("click", function () { sortBy(th); }); });
    document.getElementById("overlay").addEventListener("change", function (e) { setOverlay(e.target.checked); });
    document.getElementById("export").addEventListener("click", exportRatings);
    document.addEventListener("keydown", onKey);
    window.addEventListener("hashchange", function () { goToHash(true); });
    document.getElementById("storage-warning").hidden = storageOk;
    counts();
    if (!goToHash(true)) go(0, false);
  }

  // a link to #img-<name> (the "annotate next" table, or from elsewhere) makes that image current
  function goToHash(scroll) {
    const hash = decodeURIComponent(window.location.hash.slice(1));
    const index = hash ? rows().findIndex(function (row) { return row.dataset.target === hash; }) : -1;
    if (index >= 0) go(index, scroll);
    return index >= 0;
  }

  wire();
})();
