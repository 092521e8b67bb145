// The edge-agent console (docs/console.md). Plain DOM, no framework, no CDN:
// devices are offline. Everything comes from the JSON/SVG routes under the
// prefix; data is put in the page with textContent (never as HTML), the
// timeline SVG is parsed as XML and imported. Writes send the session's CSRF
// value (from the page's <meta>) in X-CSRF-Token.
(() => {
  'use strict';
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const PREFIX = meta('console-prefix');
  const CSRF = meta('csrf-token');
  const REFRESH_MS = 5000;
  const TIMELINE_MS = 30000;
  const state = { refreshes: 0, timelines: 0, lastError: null, liveview: null, locations: [] };
  window.consoleState = state;

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const kid of kids) e.append(kid);
    return e;
  };

  async function api(path, opts = {}) {
    const resp = await fetch(PREFIX + path, { credentials: 'same-origin', ...opts });
    if (resp.status === 401) {
      location.href = PREFIX + '/login';
      throw new Error('logged out');
    }
    return resp;
  }
  async function getJson(path) {
    const resp = await api(path);
    const doc = await resp.json();
    if (!resp.ok) throw new Error(doc.error || resp.statusText);
    return doc;
  }
  async function postJson(path, body) {
    const resp = await api(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': CSRF },
      body: JSON.stringify(body),
    });
    const doc = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(doc.error || resp.statusText);
    return doc;
  }

  // -- plain rendering of whatever the agent reports -------------------------------
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const bytes = (n) => {
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  };
  function text(v, key = '') {
    if (typeof v === 'number' && /bytes$/.test(key)) return bytes(v);
    if (v === null || v === undefined) return '—';
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (Array.isArray(v)) return v.length ? v.map(text).join('; ') : 'none';
    if (isObj(v)) {
      return Object.entries(v).map(([k, x]) => `${k.replace(/_/g, ' ')}: ${text(x, k)}`)
        .join(', ');
    }
    return String(v);
  }
  function badge(value) {
    const s = String(value ?? 'unknown');
    return el('span', { class: `badge s-${s.replace(/[^a-z0-9_-]/gi, '')}`, text: s });
  }
  function dl(doc, skip = []) {
    const list = el('dl');
    for (const [k, v] of Object.entries(doc)) {
      if (skip.includes(k)) continue;
      list.append(el('dt', { text: k.replace(/_/g, ' ') }), el('dd', { text: text(v, k) }));
    }
    return list;
  }
  function human(bps) {
    if (typeof bps !== 'number') return text(bps);
    if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
    if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kbit/s`;
    return `${bps} bit/s`;
  }

  // -- cards ---------------------------------------------------------------------------
  function renderOverview(doc) {
    state.liveview = doc.liveview || null;
    const body = $('#overview .body');
    const head = el('p', {}, badge(doc.state));
    const reasons = Array.isArray(doc.reasons) ? doc.reasons : [];
    const list = el('ul', { class: 'reasons' });
    for (const r of reasons) list.append(el('li', { text: text(r) }));
    body.replaceChildren(head, list, dl(doc, ['state', 'reasons', 'liveview']));
  }

  const cards = new Map();
  function sourceCard(src) {
    let card = cards.get(src.id);
    if (!card) {
      const img = el('img', { class: 'still', alt: `latest picture from ${src.id}` });
      img.addEventListener('error', () => card.classList.add('no-still'));
      img.addEventListener('load', () => card.classList.remove('no-still'));
      card = el('article', { class: 'card source', 'data-id': src.id },
        el('h3', { text: src.id }), el('div', { class: 'status' }), img,
        el('p', { class: 'nostill muted', text: 'no picture yet' }), el('div', { class: 'facts' }),
        el('p', { class: 'actions' }));
      card.still = img;
      cards.set(src.id, card);
      $('#sources .cards').append(card);
    }
    return card;
  }
  function renderSources(list) {
    const seen = new Set();
    for (const src of list) {
      seen.add(src.id);
      const card = sourceCard(src);
      $('.status', card).replaceChildren(badge(src.state),
        el('span', { class: 'reason', text: src.reason ? ` ${src.reason}` : '' }));
      $('.facts', card).replaceChildren(dl({
        location: src.location, last_segment: src.last_segment, bitrate: human(src.bitrate),
      }));
      const actions = $('.actions', card);
      if (state.liveview && src.live !== false) {
        if (!$('a.live', actions)) {
          actions.replaceChildren(el('a', { class: 'live button', href: state.liveview,
            text: 'Live view' }));
        }
      } else {
        actions.replaceChildren();
      }
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) { card.remove(); cards.delete(id); }
    }
  }
  function refreshStills() {
    for (const [id, card] of cards) {
      card.still.src = `${PREFIX}/api/still/${encodeURIComponent(id)}?t=${Date.now()}`;
    }
  }

  let holdsSig = '';
  function renderHolds(holds) {
    const sig = JSON.stringify(holds);
    if (sig === holdsSig) return;
    holdsSig = sig;
    const body = $('#holds .body');
    if (!holds.length) {
      body.replaceChildren(el('p', { class: 'muted', text: 'no active holds' }));
      return;
    }
    const list = el('ul', { class: 'holds' });
    for (const h of holds) {
      const scope = h.recording_ids && h.recording_ids.length
        ? `recordings ${h.recording_ids.join(', ')}` : `${h.location} ${h.from} → ${h.to}`;
      const by = el('input', { class: 'rel-by', placeholder: 'released by', maxlength: '200' });
      const why = el('input', { class: 'rel-reason', placeholder: 'why', maxlength: '200' });
      const btn = el('button', { type: 'button', class: 'release', text: 'Release' });
      const out = el('span', { class: 'result', role: 'status' });
      btn.addEventListener('click', async () => {
        try {
          await postJson(`/api/holds/${encodeURIComponent(h.id)}/release`,
            { by: by.value, reason: why.value });
          out.textContent = 'released';
          await refresh();
          await refreshTimelines();
        } catch (e) { out.textContent = e.message; }
      });
      list.append(el('li', { class: 'hold', 'data-id': h.id },
        el('strong', { text: `${h.id} (${h.kind})` }),
        el('span', { text: ` ${scope}; ${h.reason} — by ${h.placed_by}` +
          (h.until ? `, until ${h.until}` : '') }),
        el('span', { class: 'release-form' }, by, why, btn, out)));
    }
    body.replaceChildren(list);
  }

  function renderEvents(events) {
    const list = el('ol', { class: 'events' });
    for (const ev of events) {
      const what = ev.action || ev.kind || ev.event || '';
      list.append(el('li', {}, el('time', { text: ev.ts || ev.at || '' }),
        el('span', { text: ` ${what} ${ev.subject || ''}${ev.actor ? ` (${ev.actor})` : ''}` })));
    }
    $('#events .body').replaceChildren(events.length ? list :
      el('p', { class: 'muted', text: 'no events' }));
  }

  function renderDoctor(checks) {
    const list = el('ul', { class: 'doctor' });
    for (const c of checks) {
      list.append(el('li', { class: c.ok ? 'ok' : 'fail' }, badge(c.ok ? 'ok' : 'fail'),
        el('span', { text: ` ${c.name}: ${text(c.detail)}` })));
    }
    $('#doctor .body').replaceChildren(list);
  }

  // Answers can arrive out of order (a slow one started before a hold was released):
  // only the newest refresh draws, so an older answer never paints over a newer one.
  const drawn = { timelines: 0, overview: 0 };

  async function refreshTimelines() {
    const gen = ++drawn.timelines;
    const win = $('#window').value;
    const body = $('#timelines .body');
    const parts = await Promise.all(state.locations.map(async (loc) => {
      const resp = await api(`/api/timeline/${encodeURIComponent(loc)}?window=${win}`);
      const fig = el('figure', { class: 'timeline', 'data-location': loc },
        el('figcaption', { text: loc }));
      if (!resp.ok) {
        fig.append(el('p', { class: 'error', text: (await resp.json()).error }));
        return fig;
      }
      const doc = new DOMParser().parseFromString(await resp.text(), 'image/svg+xml');
      fig.append(el('div', { class: 'scroll' }, document.importNode(doc.documentElement, true)));
      return fig;
    }));
    if (gen !== drawn.timelines) return;
    body.replaceChildren(...parts);
    // Where a timeline scrolls (a phone), show its recent end first: now is on the right.
    body.querySelectorAll('.scroll').forEach((s) => { s.scrollLeft = s.scrollWidth; });
    state.timelines += 1;
  }

  async function refreshDoctor() {
    $('#doctor .body').replaceChildren(el('p', { class: 'muted', text: 'running…' }));
    renderDoctor((await getJson('/api/doctor')).checks);
  }

  async function refresh() {
    const gen = ++drawn.overview;
    try {
      const [ov, src, holds, ev] = await Promise.all([getJson('/api/overview'),
        getJson('/api/sources'), getJson('/api/holds'), getJson('/api/events?limit=20')]);
      if (gen !== drawn.overview) return;
      renderOverview(ov);
      renderSources(src.sources);
      renderHolds(holds.holds);
      renderEvents(ev.events);
      $('#updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
      state.lastError = null;
    } catch (e) {
      state.lastError = e.message;
      $('#updated').textContent = `not updated: ${e.message}`;
    }
    state.refreshes += 1;
  }

  // -- placing a hold ------------------------------------------------------------------
  const utc = (v) => (v ? (v.length === 16 ? `${v}:00Z` : `${v}Z`) : undefined);
  const localValue = (d) => d.toISOString().slice(0, 19);
  function setupHoldForm() {
    const form = $('#hold-form');
    const now = new Date();
    form.elements.from.value = localValue(new Date(now - 3600e3));
    form.elements.to.value = localValue(now);
    form.elements.location.replaceChildren(
      ...state.locations.map((l) => el('option', { value: l, text: l })));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const f = form.elements;
      const out = $('.result', form);
      try {
        const doc = await postJson('/api/holds', {
          kind: f.kind.value, location: f.location.value, from: utc(f.from.value),
          to: utc(f.to.value), until: utc(f.until.value), reason: f.reason.value, by: f.by.value,
        });
        out.textContent = `placed ${doc.hold.id}`;
        await refresh();
        await refreshTimelines();
      } catch (e) { out.textContent = e.message; }
    });
  }

  async function start() {
    $('#logout').addEventListener('click', async () => {
      await postJson('/logout', {}).catch(() => {});
      location.href = PREFIX + '/login';
    });
    $('#doctor-run').addEventListener('click', () => refreshDoctor().catch(() => {}));
    $('#window').addEventListener('change', () => refreshTimelines().catch(() => {}));
    state.locations = (await getJson('/api/locations')).locations;
    setupHoldForm();
    await refresh();
    refreshStills();
    await Promise.all([refreshTimelines(), refreshDoctor()]).catch((e) => {
      state.lastError = e.message;
    });
    // Polling only while the page is open and visible: the agent does nothing for the
    // console otherwise (a phone in a pocket or a background tab asks for nothing).
    setInterval(() => {
      if (!document.hidden) { refresh(); refreshStills(); }
    }, REFRESH_MS);
    setInterval(() => {
      if (!document.hidden) refreshTimelines().catch(() => {});
    }, TIMELINE_MS);
  }
  start().catch((e) => { state.lastError = e.message; });
})();
