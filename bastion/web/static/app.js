// bastion web viewer: reads JSON and asciicast recordings from /ui/data/ (same origin, the
// HttpOnly session cookie) and puts every server value into the page as text (textContent),
// never as HTML.  Recordings go to asciinema-player as data.  No inline script: the page's
// Content-Security-Policy forbids it.
"use strict";

(function () {
  const viewer = { player: null, channel: null, session: null };
  window.bastionViewer = viewer;       // for the browser tests: the player and its channel

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function say(text, cls) {
    const node = document.getElementById("message");
    node.textContent = text || "";
    node.className = cls || "";
  }

  async function getJSON(path) {
    const resp = await fetch("/ui/data/" + path, { credentials: "same-origin" });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (resp.status === 401) {
      say("Your sign-in has ended. ", "error");
      const a = el("a", "Sign in again");
      a.href = "/ui/login";
      document.getElementById("message").appendChild(a);
      throw new Error("not signed in");
    }
    if (!resp.ok) {
      const msg = body && body.error ? body.error : "HTTP " + resp.status;
      const hint = body && body.hint ? " (" + body.hint + ")" : "";
      say(msg + hint, "error");
      throw new Error(msg);
    }
    return body;
  }

  async function whoami() {
    try {
      const me = await getJSON("whoami");
      document.getElementById("whoami").textContent = me.name || me.subject;
    } catch (e) { /* said already */ }
  }

  function fmtTime(iso) {
    if (!iso) return "";
    return iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z");
  }

  // -- command search (the API's FTS) -------------------------------------------------
  async function commandSearch(q) {
    document.getElementById("search").elements.namedItem("q").value = q;
    const body = await getJSON("commands?" + new URLSearchParams({ q: q, limit: "200" }).toString());
    const table = document.getElementById("commands");
    const tbody = table.querySelector("tbody");
    tbody.replaceChildren();
    for (const c of body.commands) {
      const tr = el("tr");
      tr.dataset.command = c.id;
      tr.className = "action-" + c.action;
      tr.appendChild(el("td", fmtTime(c.time)));
      const cell = el("td");
      const link = el("a", c.session_id);
      link.href = "/ui/session?id=" + encodeURIComponent(c.session_id);
      cell.appendChild(link);
      tr.appendChild(cell);
      for (const [v, cls] of [[c.principal_name || c.principal_subject], [c.target],
                              [c.action], [c.line, "line"], [c.rule], [c.exit_status]]) {
        tr.appendChild(el("td", v, cls));
      }
      tbody.appendChild(tr);
    }
    table.hidden = false;
    document.getElementById("sessions").hidden = true;
    say(body.commands.length + " command(s) match.");
  }

  // -- the sessions list ---------------------------------------------------------------
  async function sessionsPage() {
    const params = new URLSearchParams(location.search);
    if (params.get("q")) return commandSearch(params.get("q"));
    const form = document.getElementById("filters");
    for (const [key, value] of params) {
      const field = form.elements.namedItem(key);
      if (!field) continue;
      if (field.type === "checkbox") field.checked = value === "1";
      else field.value = value;
    }
    const query = new URLSearchParams();
    for (const key of ["principal", "target", "since", "status", "denied"]) {
      if (params.get(key)) query.set(key, params.get(key));
    }
    query.set("limit", "200");
    const body = await getJSON("sessions?" + query.toString());
    const tbody = document.querySelector("#sessions tbody");
    tbody.replaceChildren();
    for (const s of body.sessions) {
      const tr = el("tr");
      tr.dataset.session = s.id;
      const idCell = el("td");
      const link = el("a", s.id);
      link.href = "/ui/session?id=" + encodeURIComponent(s.id);
      idCell.appendChild(link);
      tr.appendChild(idCell);
      const who = s.principal ? (s.principal.name || s.principal.subject) : "";
      for (const v of [fmtTime(s.started), who, s.target, s.login, s.status, s.n_commands,
                       s.n_denied]) {
        tr.appendChild(el("td", v));
      }
      if (s.n_denied) tr.className = "denied";
      tbody.appendChild(tr);
    }
    say(body.sessions.length ? "" : "No sessions match.");
  }

  // -- one session ---------------------------------------------------------------------
  function decode64(text) {
    const bin = atob(text);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  }

  // asciicast v2 as bastion stores it: stdout "o", stderr "e", and "ob"/"eb" (base64 for
  // bytes that are not UTF-8) all become terminal output; input is not replayed; markers
  // (each decided command) show on the progress bar.  The player wants milliseconds.
  async function castParser(response) {
    const text = await response.text();
    const lines = text.split("\n").filter((l) => l.length > 0);
    const header = JSON.parse(lines[0]);
    const events = [];
    const body = lines.slice(1);
    if (body.length && !text.endsWith("\n")) body.pop();   // a running channel's line being written
    for (const line of body) {
      const ev = JSON.parse(line);
      const [sec, code, data] = ev;
      const t = sec * 1000;
      if (code === "o" || code === "e") events.push([t, "o", data]);
      else if (code === "ob" || code === "eb") events.push([t, "o", decode64(data)]);
      else if (code === "r" || code === "m") events.push([t, code, data]);
    }
    return { cols: header.width, rows: header.height, events: events };
  }

  function load(sid, channel, seekTo, recording) {
    const box = document.getElementById("player");
    if (viewer.player) viewer.player.dispose();
    box.replaceChildren();
    viewer.channel = channel.id;
    for (const b of document.querySelectorAll("#channels button")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.channel) === channel.id));
    }
    const live = !recording && (channel.ended === null || channel.ended === undefined);
    const mode = document.getElementById("mode");
    mode.textContent = live ? "Live: channel " + channel.id + " is running"
                            : "Recording of channel " + channel.id + (recording && !channel.ended ? " so far" : "");
    mode.className = live ? "live" : "";
    let src;
    if (live) {
      src = { driver: "eventsource", bufferTime: 0,
              url: "/ui/data/sessions/" + sid + "/live?format=asciicast&channel=" + channel.id };
    } else {
      src = { url: "/ui/data/sessions/" + sid + "/channels/" + channel.id + "/recording",
              parser: castParser };
    }
    const opts = { preload: true, autoPlay: live, fit: "width",
                   cols: channel.width || 80, rows: channel.height || 24 };
    viewer.player = AsciinemaPlayer.create(src, box, opts);
    viewer.live = live;
    viewer.started = live;
    viewer.player.addEventListener("play", () => { viewer.started = true; });
    if (seekTo !== undefined) seek(seekTo);
  }

  // Show the terminal as it was at ``t`` (s), paused there: before the first play the
  // player shows only its start overlay, so start it once and pause it first.
  async function seek(t) {
    const player = viewer.player;
    if (!viewer.started) {
      await player.play();
      await player.pause();
    }
    await player.seek(t);
    viewer.seekedTo = t;
  }

  async function sessionPage() {
    const sid = Number(new URLSearchParams(location.search).get("id"));
    if (!Number.isInteger(sid) || sid <= 0) { say("No session id in the address.", "error"); return; }
    const s = await getJSON("sessions/" + sid);
    viewer.session = s;
    document.getElementById("title").textContent = "Session " + s.id;
    const facts = document.getElementById("facts");
    const who = s.principal ? (s.principal.name || s.principal.subject) : "";
    for (const [k, v] of [["Principal", who], ["Target", s.target], ["Login", s.login],
                          ["Client", s.client], ["Started", fmtTime(s.started)],
                          ["Ended", fmtTime(s.ended)], ["Status", s.status],
                          ["Reason", s.reason]]) {
      if (v === null || v === undefined || v === "") continue;
      facts.appendChild(el("dt", k));
      facts.appendChild(el("dd", v));
    }
    const recorded = s.channels.filter((c) => c.path);
    const nav = document.getElementById("channels");
    for (const c of recorded) {
      const b = el("button", "Channel " + c.id + " · " + c.kind + (c.command ? " · " + c.command : ""));
      b.type = "button";
      b.dataset.channel = c.id;
      b.addEventListener("click", () => load(sid, c));
      nav.appendChild(b);
    }
    renderCommands(sid, s);
    const open = recorded.filter((c) => c.ended === null || c.ended === undefined);
    const first = open.length ? open[open.length - 1] : recorded[0];
    if (first) load(sid, first);
    else say("This session has no recorded channel.");
    if (open.length) follow(sid);
  }

  // The command timeline: each row with an offset seeks the player there (a running
  // channel's recording so far is loaded for it; its channel button goes back to live).
  function renderCommands(sid, s) {
    const recorded = s.channels.filter((c) => c.path);
    const tbody = document.querySelector("#commands tbody");
    tbody.replaceChildren();
    for (const c of s.commands) {
      const tr = el("tr");
      tr.dataset.command = c.id;
      tr.className = "action-" + c.action;
      const at = (c.offset === null || c.offset === undefined) ? "" : Number(c.offset).toFixed(2) + " s";
      const cells = [fmtTime(c.time), at, c.line, c.action + (c.approver ? " by " + c.approver : ""),
                     c.rule, c.exit_status];
      cells.forEach((v, i) => tr.appendChild(el("td", v, i === 2 ? "line" : undefined)));
      const channel = recorded.find((ch) => ch.id === c.channel_id);
      if (channel && c.offset !== null && c.offset !== undefined) {
        tr.tabIndex = 0;
        tr.classList.add("seekable");
        tr.title = "Play from here";
        const go = () => {
          if (viewer.channel === channel.id && viewer.player && !viewer.live) {
            seek(Number(c.offset));
          } else {
            load(sid, channel, Number(c.offset), true);
          }
        };
        tr.addEventListener("click", go);
        tr.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
      }
      tbody.appendChild(tr);
    }
  }

  // While a channel runs, the timeline follows it: new commands, their decisions and exit
  // statuses appear as the index gets them.
  function follow(sid) {
    const timer = setInterval(async () => {
      let s;
      try { s = await getJSON("sessions/" + sid); } catch (e) { clearInterval(timer); return; }
      renderCommands(sid, s);
      if (!s.channels.some((c) => c.path && (c.ended === null || c.ended === undefined))) {
        clearInterval(timer);
        const mode = document.getElementById("mode");
        if (viewer.live) { mode.textContent = "Channel " + viewer.channel + " has ended"; mode.className = ""; }
      }
    }, 2000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    whoami();
    const page = document.body.dataset.page;
    const run = page === "session" ? sessionPage : sessionsPage;
    run().catch((e) => { if (!document.getElementById("message").textContent) say(String(e), "error"); });
  });
})();
