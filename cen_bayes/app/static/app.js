// The sorting page: fetch a grid, let the person put every image in a group, post the answer.
// No build step and no library: the server sends this file as it is.
"use strict";

const state = { worker: "", grid: null, maxGroups: 10 };
const $ = (id) => document.getElementById(id);

function say(text, kind) {
  const message = $("message");
  message.textContent = text;
  message.className = kind || "";
}

async function getJSON(response) {
  try { return await response.json(); } catch (e) { return { detail: `HTTP ${response.status}` }; }
}

function tile(imageId) {
  const div = document.createElement("div");
  div.className = "tile";
  div.draggable = true;
  div.tabIndex = 0;
  div.setAttribute("role", "button");
  div.setAttribute("aria-pressed", "false");
  div.setAttribute("aria-label", `image ${imageId}`);
  div.dataset.imageId = imageId;
  const img = document.createElement("img");
  img.src = "/images/" + imageId.split("/").map(encodeURIComponent).join("/");
  img.alt = imageId;
  img.draggable = false;
  div.appendChild(img);
  div.addEventListener("click", (event) => { event.stopPropagation(); toggle(div); });
  div.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); event.stopPropagation(); toggle(div); }
  });
  div.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData("text/plain", imageId);
    event.dataTransfer.effectAllowed = "move";
  });
  return div;
}

function toggle(div) {
  const on = !div.classList.contains("selected");
  div.classList.toggle("selected", on);
  div.setAttribute("aria-pressed", String(on));
}

function selected() { return Array.from(document.querySelectorAll(".tile.selected")); }

function moveTo(target, tiles) {
  const holder = target.classList.contains("group") ? target.querySelector(".members") : target;
  for (const t of tiles) {
    t.classList.remove("selected");
    t.setAttribute("aria-pressed", "false");
    holder.appendChild(t);
  }
  update();
}

function dropZone(element) {
  element.addEventListener("click", () => { const tiles = selected(); if (tiles.length) moveTo(element, tiles); });
  element.addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === " ") && event.target === element) {
      event.preventDefault();
      element.click();
    }
  });
  element.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    element.classList.add("drop-target");
  });
  element.addEventListener("dragleave", () => element.classList.remove("drop-target"));
  element.addEventListener("drop", (event) => {
    event.preventDefault();
    element.classList.remove("drop-target");
    const id = event.dataTransfer.getData("text/plain");
    const t = Array.from(document.querySelectorAll(".tile")).find((x) => x.dataset.imageId === id);
    if (t) moveTo(element, [t]);
  });
}

function buildGroups(n) {
  const groups = $("groups");
  groups.replaceChildren();
  for (let k = 1; k <= n; k++) {
    const box = document.createElement("div");
    box.className = "group";
    box.dataset.group = String(k);
    box.tabIndex = 0;
    box.setAttribute("role", "button");
    box.setAttribute("aria-label", `group ${k}`);
    const title = document.createElement("h2");
    title.textContent = `Group ${k}`;
    const members = document.createElement("div");
    members.className = "members";
    box.append(title, members);
    dropZone(box);
    groups.appendChild(box);
  }
}

function unplaced() { return $("pool").querySelectorAll(".tile").length; }

function update() {
  const left = unplaced();
  $("submit").disabled = state.grid === null;
  if (state.grid !== null && left === 0 && $("message").classList.contains("error")) say("");
}

async function loadNext() {
  state.grid = null;
  update();
  let response;
  try {
    response = await fetch("/api/next?worker_id=" + encodeURIComponent(state.worker));
  } catch (e) {
    say("Could not reach the server; reload the page to try again.", "error");
    return;
  }
  const body = await getJSON(response);
  if (response.status === 404) {
    $("board").hidden = true;
    $("progress").textContent = "";
    say(`All done, thank you! (${body.detail})`, "ok");
    return;
  }
  if (!response.ok) { say(body.detail, "error"); return; }
  state.grid = body.grid_id;
  state.maxGroups = body.max_groups || 10;
  $("pool").replaceChildren(...body.images.map(tile));
  buildGroups(state.maxGroups);
  $("board").hidden = false;
  $("board").dataset.gridId = body.grid_id;
  $("progress").textContent = `Grid ${body.answered + 1} of ${body.grids} (${body.grid_id})`;
  update();
}

async function submit() {
  const left = unplaced();
  if (left > 0) {
    say(`Put every image in a group first: ${left} image${left === 1 ? " is" : "s are"} not in a group.`, "error");
    return;
  }
  const groups = {};
  for (const box of document.querySelectorAll(".group")) {
    for (const t of box.querySelectorAll(".tile")) groups[t.dataset.imageId] = box.dataset.group;
  }
  $("submit").disabled = true;
  const grid = state.grid;
  let response;
  try {
    response = await fetch("/api/answer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ worker_id: state.worker, grid_id: grid, groups }),
    });
  } catch (e) {
    say("Could not reach the server; your sorting is kept, try Submit again.", "error");
    $("submit").disabled = false;
    return;
  }
  const body = await getJSON(response);
  if (!response.ok) { say(body.detail, "error"); $("submit").disabled = false; return; }
  say(body.already_stored ? `Grid ${grid} was already saved.` : `Saved grid ${grid}. Thank you!`, "ok");
  await loadNext();
}

function start(worker) {
  state.worker = worker.trim();
  if (!state.worker) { say("Type your id to start.", "error"); return; }
  $("worker").value = state.worker;
  const url = new URL(window.location);
  url.searchParams.set("worker_id", state.worker);
  window.history.replaceState(null, "", url);
  say("");
  loadNext();
}

dropZone($("pool"));
$("submit").addEventListener("click", submit);
$("who").addEventListener("submit", (event) => { event.preventDefault(); start($("worker").value); });
const given = new URLSearchParams(window.location.search).get("worker_id");
if (given) start(given);
