// geoseg web page: sign in with a token, submit jobs, follow them, view and download outputs.
// Plain JavaScript, no build step; MapLibre GL JS is vendored under /static/vendor.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("geoseg-token") || "", jobs: [], models: [],
                scenes: [], selected: null, follow: null, shown: null, poll: null };
window.geoseg = state;  // for tests and curious users

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, opts.headers || {});
  const res = await fetch(API + path, Object.assign({}, opts, { headers }));
  if (res.status === 401) { signOut("token refused: sign in again"); throw new Error("401"); }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return res;
}
const getJSON = async (path) => (await api(path)).json();

function text(el, value, cls) { el.textContent = value; el.className = cls || ""; }

// ---------------------------------------------------------------- sign in

async function signIn(token) {
  state.token = token.trim();
  try {
    const me = await getJSON("/me");
    sessionStorage.setItem("geoseg-token", state.token);
    $("whoami").textContent = me.name; $("whoami").hidden = false; $("signout").hidden = false;
    $("signin-form").hidden = true;
    for (const id of ["submit-section", "jobs-section"]) $(id).hidden = false;
    await Promise.all([loadModels(), loadScenes()]);
    await refreshJobs();
    state.poll = setInterval(refreshJobs, 2000);
  } catch (err) {
    if (err.message !== "401") alert(err.message);
  }
}

function signOut(message) {
  sessionStorage.removeItem("geoseg-token");
  state.token = "";
  clearInterval(state.poll);
  if (state.follow) state.follow.abort();
  $("signin-form").hidden = false; $("whoami").hidden = true; $("signout").hidden = true;
  for (const id of ["submit-section", "jobs-section", "detail"]) $(id).hidden = true;
  if (message) $("token").placeholder = message;
}

// ---------------------------------------------------------------- models, scenes

async function loadModels() {
  state.models = await getJSON("/models");
  const sel = $("model");
  sel.innerHTML = "";
  for (const m of state.models.filter((m) => !m.error)) {
    sel.append(new Option(`${m.name} (${m.architecture}, ${m.classes.length} classes)`, m.name));
  }
  showModel();
}

function showModel() {
  const m = state.models.find((x) => x.name === $("model").value);
  $("model-info").textContent = m ? `inputs: ${m.inputs.join(" + ")}; tile ${m.tile} px` +
    (m.gsd ? `; GSD ${m.gsd} m` : "") + (m.trained ? "" : " — untrained weights") : "";
}

async function loadScenes(select) {
  state.scenes = await getJSON("/scenes");
  const sel = $("scene");
  sel.innerHTML = "";
  for (const s of state.scenes) {
    sel.append(new Option(`${s.name} (${s.width}×${s.height}, ${s.modalities.join("+")})`, s.id));
  }
  if (select) sel.value = select;
}

async function addScene() {
  const path = $("scene-path").value.trim();
  const body = { path, modalities: {} };
  const mod = $("scene-mod").value.trim();
  if (mod) { const [k, v] = mod.split("="); body.modalities[k.trim()] = (v || "").trim(); }
  try {
    const res = await api("/scenes", { method: "POST", body: JSON.stringify(body),
                                       headers: { "Content-Type": "application/json" } });
    const scene = await res.json();
    text($("scene-msg"), `registered ${scene.name}`, "hint");
    await loadScenes(scene.id);
  } catch (err) { text($("scene-msg"), err.message, "hint error"); }
}

async function uploadScene() {
  const file = $("scene-file").files[0];
  if (!file) return;
  text($("scene-msg"), `uploading ${file.name}…`, "hint");
  try {
    const res = await api(`/scenes?name=${encodeURIComponent(file.name.replace(/\.[^.]*$/, ""))}`,
                          { method: "POST", body: file, headers: { "Content-Type": "image/tiff" } });
    const scene = await res.json();
    text($("scene-msg"), `uploaded ${scene.name}`, "hint");
    await loadScenes(scene.id);
  } catch (err) { text($("scene-msg"), err.message, "hint error"); }
}

// ---------------------------------------------------------------- jobs

async function submitJob(ev) {
  ev.preventDefault();
  const options = { vector: $("opt-vector").value, confidence: $("opt-confidence").checked,
                    probabilities: $("opt-probabilities").checked };
  if ($("opt-tile").value) options.tile = Number($("opt-tile").value);
  if ($("opt-min-area").value) options.min_area = Number($("opt-min-area").value);
  const body = { model: $("model").value, scene: $("scene").value, options };
  try {
    const res = await api("/jobs", { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() } });
    const job = await res.json();
    text($("submit-msg"), `submitted ${job.id.slice(0, 8)}`, "hint");
    await refreshJobs();
    selectJob(job.id);
  } catch (err) { text($("submit-msg"), err.message, "hint error"); }
}

function pct(job) { return Math.round((job.progress && job.progress.percent) || 0); }

function describe(job) {
  const p = job.progress || {};
  if (job.state === "running") {
    let s = `${p.stage || "running"}`;
    if (p.chunks_total) s += ` — chunk ${p.chunks_done}/${p.chunks_total}`;
    if (p.eta_s != null) s += `, ETA ${Math.round(p.eta_s)} s`;
    return (job.cancelling ? "cancelling… " : "") + s;
  }
  if (job.state === "failed") return `failed: ${job.error}`;
  if (job.state === "done") return `done in ${job.elapsed_s} s`;
  return job.state;
}

async function refreshJobs() {
  try { state.jobs = await getJSON("/jobs"); } catch (_) { return; }
  const ul = $("jobs");
  ul.innerHTML = "";
  for (const job of state.jobs.slice().reverse()) {
    const li = document.createElement("li");
    li.dataset.id = job.id;
    li.className = job.id === state.selected ? "selected" : "";
    const name = job.label || (job.scenes[0] && job.scenes[0].name) || job.kind;
    li.innerHTML = `<span class="state"></span><b></b> <small></small>` +
      `<div class="progress"><div></div></div>`;
    li.querySelector("b").textContent = name;
    li.querySelector("small").textContent = `${job.model} · ${job.id.slice(0, 8)}`;
    li.querySelector(".state").textContent = `${job.state} ${pct(job)} %`;
    li.querySelector(".progress > div").style.width = `${pct(job)}%`;
    li.addEventListener("click", () => selectJob(job.id));
    ul.append(li);
  }
  const sel = state.jobs.find((j) => j.id === state.selected);
  if (sel) showDetail(sel);
}

function selectJob(id) {
  state.selected = id;
  for (const li of $("jobs").children) li.className = li.dataset.id === id ? "selected" : "";
  const job = state.jobs.find((j) => j.id === id);
  if (job) showDetail(job);
  followJob(id);
}

function showDetail(job) {
  $("detail").hidden = false;
  $("detail-id").textContent = job.id.slice(0, 8);
  $("detail-bar").style.width = `${pct(job)}%`;
  $("detail-status").textContent = `${pct(job)} % — ${describe(job)}`;
  $("detail-status").dataset.percent = pct(job);
  $("detail-status").dataset.state = job.state;
  $("cancel").hidden = !(job.state === "queued" || job.state === "running");
  showOnMap(job);
  if (job.state !== "done") { $("files").innerHTML = ""; $("files").dataset.loaded = ""; }
  else if ($("files").dataset.loaded !== job.id) loadFiles(job);
}

// Server-Sent Events read with fetch (EventSource cannot send the Authorization header)
async function followJob(id) {
  if (state.follow) state.follow.abort();
  const ctrl = new AbortController();
  state.follow = ctrl;
  try {
    const res = await api(`/jobs/${id}/events`, { signal: ctrl.signal });
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
        if (!data.length) continue;
        const ev = JSON.parse(data.join("\n"));
        const job = state.jobs.find((j) => j.id === ev.id);
        if (job) { Object.assign(job, ev); if (state.selected === ev.id) showDetail(job); }
        if (["done", "failed", "cancelled"].includes(ev.state)) { await refreshJobs(); }
      }
    }
  } catch (err) { if (err.name !== "AbortError") console.warn(err); }
}

async function cancelJob() {
  if (!state.selected) return;
  try { await api(`/jobs/${state.selected}`, { method: "DELETE" }); } catch (err) { alert(err.message); }
  refreshJobs();
}

async function loadFiles(job) {
  $("files").dataset.loaded = job.id;
  const files = await getJSON(`/jobs/${job.id}/files`);
  const ul = $("files");
  ul.innerHTML = "";
  for (const f of files) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.textContent = `${f.name} (${(f.size / 1024).toFixed(0)} KiB)`;
    a.addEventListener("click", () => download(f));
    li.append(a);
    ul.append(li);
  }
}

async function download(f) {  // fetched with the token, handed to the browser as a blob
  const blob = await (await api(f.url.slice(API.length))).blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = f.name.split("/").pop();
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---------------------------------------------------------------- map

const map = new maplibregl.Map({
  container: "map",
  style: { version: 8, sources: {}, layers: [
    { id: "background", type: "background", paint: { "background-color": "#eceff1" } }] },
  center: [0, 20], zoom: 1, attributionControl: false,
  transformRequest: (url) => (url.startsWith(location.origin + API)
    ? { url, headers: { Authorization: `Bearer ${state.token}` } } : { url }),
});
map.addControl(new maplibregl.NavigationControl(), "top-left");
map.addControl(new maplibregl.ScaleControl(), "bottom-left");
state.map = map;
const ready = new Promise((resolve) => map.on("load", resolve));

function drop(id) {
  if (map.getLayer(id)) map.removeLayer(id);
  if (map.getSource(id)) map.removeSource(id);
}

async function showOnMap(job) {
  await ready;
  const key = `${job.id}:${job.state}`;
  if (state.shown === key) return;
  state.shown = key;
  state.predictionReady = false;
  for (const id of ["picked", "prediction", "scene"]) drop(id);
  const scene = job.scenes[0];
  if (!scene) return;
  const b = scene.bounds;
  map.addSource("scene", { type: "raster", tileSize: 256, bounds: b, maxzoom: 22,
                           tiles: [`${location.origin}${API}/scenes/${scene.id}/tiles/{z}/{x}/{y}.png`] });
  map.addLayer({ id: "scene", type: "raster", source: "scene" });
  if (job.state === "done") {
    map.addSource("prediction", { type: "raster", tileSize: 256, bounds: b, maxzoom: 22,
      tiles: [`${location.origin}${API}/jobs/${job.id}/tiles/{z}/{x}/{y}.png?scene=${encodeURIComponent(scene.name)}`] });
    map.addLayer({ id: "prediction", type: "raster", source: "prediction",
                   paint: { "raster-opacity": $("opacity").value / 100, "raster-resampling": "nearest" } });
    map.once("idle", () => { state.predictionReady = true; });
  }
  map.fitBounds([[b[0], b[1]], [b[2], b[3]]], { padding: 20, animate: false });
  legend(job.classes || []);
}

function legend(classes) {
  const div = $("legend");
  div.innerHTML = "";
  for (const c of classes) {
    const item = document.createElement("div");
    item.className = "item";
    item.innerHTML = `<span class="swatch"></span><span class="name"></span>`;
    item.querySelector(".swatch").style.background = c.color;
    item.querySelector(".name").textContent = c.name;
    div.append(item);
  }
}

$("opacity").addEventListener("input", () => {
  if (map.getLayer("prediction")) map.setPaintProperty("prediction", "raster-opacity", $("opacity").value / 100);
});

map.on("click", async (e) => {  // the polygon under the click, with its class and area
  const job = state.jobs.find((j) => j.id === state.selected);
  if (!job || job.state !== "done" || job.options.vector === "none") return;
  const scene = job.scenes[0];
  try {
    const fc = await getJSON(`/jobs/${job.id}/features?lon=${e.lngLat.lng}&lat=${e.lngLat.lat}` +
                             `&scene=${encodeURIComponent(scene.name)}`);
    drop("picked");
    map.addSource("picked", { type: "geojson", data: fc });
    map.addLayer({ id: "picked", type: "line", source: "picked",
                   paint: { "line-color": "#000", "line-width": 2 } });
    if (fc.features.length) {
      const p = fc.features[0].properties;
      new maplibregl.Popup().setLngLat(e.lngLat)
        .setText(`${p.class_name} — ${Math.round(p.area_m2)} m²`).addTo(map);
    }
  } catch (err) { console.warn(err); }
});

// ---------------------------------------------------------------- wiring

$("signin-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token").value); });
$("signout").addEventListener("click", () => signOut());
$("model").addEventListener("change", showModel);
$("scene-add").addEventListener("click", addScene);
$("scene-file").addEventListener("change", uploadScene);
$("job-form").addEventListener("submit", submitJob);
$("cancel").addEventListener("click", cancelJob);
if (state.token) signIn(state.token);
