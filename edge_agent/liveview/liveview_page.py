"""The live view page and its WHEP client (plain JS, no build step, no CDN).

The token is asked once (or read once from ``#token=...``, then wiped from
the address bar) and kept in ``sessionStorage``: closing the tab forgets it.
ICE gathering completes before the offer is sent — no trickle on a LAN.
"""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-agent live view</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1rem; background: #f4f4f4; color: #222; }
h1 { font-size: 1.3rem; }
#sources { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
.card { background: #fff; border-radius: 6px; padding: .8rem; box-shadow: 0 1px 3px #0002; }
.card h2 { font-size: 1.05rem; margin: 0 0 .4rem; }
.card dl { display: grid; grid-template-columns: auto 1fr; gap: .1rem .8rem; margin: 0 0 .5rem; }
.card dt { color: #666; } .card dd { margin: 0; }
video { width: 100%; background: #000; aspect-ratio: 16 / 9; }
.status { font-size: .85rem; color: #555; min-height: 1.2em; }
.warn { color: #a35200; }
#login { display: none; } #login.shown { display: block; }
#error { color: #b00020; }
</style>
</head>
<body>
<h1>edge-agent live view</h1>
<p>Live pictures only, for aiming cameras; nothing is recorded or stored by this page.</p>
<form id="login">
  <label>Live view token <input id="token" type="password" autocomplete="off" size="40"></label>
  <button type="submit">Show cameras</button>
</form>
<p id="error"></p>
<div id="sources"></div>
<script src="/liveview.js"></script>
</body>
</html>
"""

PAGE_JS = r"""'use strict';
(() => {
  const KEY = 'edge-agent-liveview-token';
  const peers = {};           // source id -> {pc, location}
  window.liveviewPeers = peers;  // for diagnostics (and the end-to-end test)
  const $ = (id) => document.getElementById(id);

  function takeFragmentToken() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, '', location.pathname + location.search);
    }
  }
  const token = () => sessionStorage.getItem(KEY) || '';
  const auth = () => ({ Authorization: 'Bearer ' + token() });

  function askToken(message) {
    $('error').textContent = message || '';
    $('login').classList.add('shown');
  }

  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $('token').value.trim());
    $('token').value = '';
    $('login').classList.remove('shown');
    load();
  });

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  function card(src) {
    const div = document.createElement('div');
    div.className = 'card';
    div.dataset.source = src.id;
    div.appendChild(text('h2', src.id));
    const dl = document.createElement('dl');
    const rows = [
      ['location', src.location], ['purpose', src.purpose], ['site', src.site],
      ['audio', src.audio ? 'allowed (audio room)' : 'not allowed'],
      ['video', src.mode === 'reencode' ? 're-encoded (camera codec not passed through)'
        : src.mode === 'passthrough' ? 'as sent by the camera' : 'waiting for the camera'],
    ];
    for (const [k, v] of rows) {
      dl.appendChild(text('dt', k));
      dl.appendChild(text('dd', v, 'f-' + k));
    }
    div.appendChild(dl);
    const video = document.createElement('video');
    video.autoplay = true; video.muted = true; video.playsInline = true; video.controls = src.audio;
    div.appendChild(video);
    div.appendChild(text('div', '', 'status'));
    return div;
  }

  function waitGathering(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
      pc.addEventListener('icegatheringstatechange', done);
      setTimeout(resolve, 3000);  // a LAN host candidate is enough; do not wait forever
    });
  }

  function hangUp(id) {
    const p = peers[id];
    if (!p) return;
    delete peers[id];
    p.pc.close();
    if (p.location) {
      fetch(p.location, { method: 'DELETE', headers: auth(), keepalive: true }).catch(() => {});
    }
  }

  async function connect(src, div) {
    const video = div.querySelector('video');
    const status = div.querySelector('.status');
    const retry = (secs, why) => {
      status.textContent = why + ' — retrying in ' + secs + ' s';
      status.classList.add('warn');
      hangUp(src.id);
      setTimeout(() => connect(src, div), secs * 1000);
    };
    status.textContent = 'connecting…';
    const pc = new RTCPeerConnection({ iceServers: [] });
    peers[src.id] = { pc, location: null };
    pc.addTransceiver('video', { direction: 'recvonly' });
    if (src.audio) pc.addTransceiver('audio', { direction: 'recvonly' });
    const stream = new MediaStream();
    pc.ontrack = (ev) => { stream.addTrack(ev.track); video.srcObject = stream; };
    pc.onconnectionstatechange = () => {
      if (peers[src.id]?.pc !== pc) return;
      if (pc.connectionState === 'connected') {
        status.textContent = 'live'; status.classList.remove('warn');
      } else if (pc.connectionState === 'failed') {
        retry(3, 'connection lost');
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathering(pc);
      const resp = await fetch('/whep/' + encodeURIComponent(src.id), {
        method: 'POST',
        headers: Object.assign({ 'Content-Type': 'application/sdp' }, auth()),
        body: pc.localDescription.sdp,
      });
      if (resp.status === 401) { hangUp(src.id); askToken('Wrong token.'); return; }
      if (resp.status !== 201) {
        let msg = 'HTTP ' + resp.status;
        try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
        retry(Number(resp.headers.get('Retry-After')) || 5, msg);
        return;
      }
      peers[src.id].location = resp.headers.get('Location');
      const mode = resp.headers.get('X-Liveview-Mode');
      if (mode) {
        div.querySelector('.f-video').textContent = mode === 'reencode'
          ? 're-encoded for this browser' : 'as sent by the camera (no re-encoding)';
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
    } catch (e) {
      retry(5, 'error: ' + e);
    }
  }

  async function load() {
    if (!token()) { askToken(''); return; }
    let resp;
    try {
      resp = await fetch('/api/sources', { headers: auth() });
    } catch (e) { $('error').textContent = 'cannot reach the agent: ' + e; return; }
    if (resp.status === 401) { sessionStorage.removeItem(KEY); askToken('Wrong token.'); return; }
    const data = await resp.json();
    $('error').textContent = '';
    const box = $('sources');
    box.replaceChildren();
    if (!data.sources.length) {
      box.appendChild(text('p', 'No live sources (a camera shows once its location has signs).'));
    }
    for (const src of data.sources) {
      const div = card(src);
      box.appendChild(div);
      connect(src, div);
    }
  }

  window.addEventListener('pagehide', () => { for (const id of Object.keys(peers)) hangUp(id); });
  takeFragmentToken();
  load();
})();
"""
