'use strict';

/*
 * Sovereign live dashboard.
 *
 * The page holds no data of its own: everything comes from the gateway's Server-Sent
 * Events stream, /v1/analytics/stream. EventSource cannot send an Authorization header,
 * so the stream is read with fetch() and parsed here. Server data only ever reaches the
 * DOM through textContent (never innerHTML): principals and messages are not trusted.
 */
(() => {
  const STREAM_URL = '/v1/analytics/stream';
  const TOKEN_KEY = 'sovereign.token';
  // The gateway's restricted countries and checkpoint deadline come with each summary;
  // until the first one, the reference configuration's. They only change how things look.
  let restrictedCountries = new Set(['CN', 'RU', 'IR', 'KP']);
  let checkpointDeadline = 5;
  // Summaries come every second and keep-alives every 15 s: longer silence means a dead
  // connection that TCP has not noticed yet.
  const SILENCE_MS = 20000;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const ALERTS_KEPT = 50;
  const OUTCOMES = ['allow', 'deny', 'partial'];

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, {
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
  });
  function clock(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? '' : timeFormat.format(date);
  }
  const number = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : '–');
  const count = (c) => (c ? (c.allow || 0) + (c.deny || 0) + (c.partial || 0) : 0);
  const restricted = (code) => restrictedCountries.has(String(code || '').toUpperCase());

  function duration(seconds) {
    if (typeof seconds !== 'number') return '';
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = Math.floor(seconds % 60);
    return h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
  }

  // ---------------------------------------------------------------------------------
  // The token. It arrives in the fragment (which browsers never send to the server) or
  // is pasted in; it lives in sessionStorage so a reload keeps it but closing the tab
  // forgets it.

  function storage(action, value) {
    // Storage can be switched off; the page then works for this load only.
    try {
      if (action === 'get') return sessionStorage.getItem(TOKEN_KEY);
      if (action === 'set') sessionStorage.setItem(TOKEN_KEY, value);
      if (action === 'forget') sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      if (action === 'get') return memoryToken;
      memoryToken = action === 'set' ? value : null;
    }
    return null;
  }
  let memoryToken = null;

  // Whether the address brought a token.
  function takeTokenFromAddress() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!match) return false;
    let token = match[1];
    try { token = decodeURIComponent(token); } catch (_) { /* keep it as it came */ }
    token = token.trim();
    if (token) storage('set', token);
    // Out of the address bar, the history and any screenshot of the page.
    history.replaceState(null, '', location.pathname + location.search);
    return token !== '';
  }

  function showForm(focus) {
    $('token-form').hidden = false;
    $('change-token').hidden = true;
    if (focus) $('token-input').focus();
  }

  function hideForm() {
    $('token-form').hidden = true;
    $('token-input').value = '';
  }

  // ---------------------------------------------------------------------------------
  // The connection. Each attempt gets a generation number: whatever an older attempt
  // still does when it wakes up (a read that fails because we aborted it) is ignored, so
  // that aborting never shows up as an error.

  const conn = {
    generation: 0, controller: null, retryTimer: 0, silenceTimer: 0,
    backoff: BACKOFF_MIN_MS, live: false,
  };

  function setStatus(state, text) {
    const status = $('status');
    status.dataset.state = state;
    // Only real changes: the status is a live region and would be read out again.
    if (status.textContent !== text) status.textContent = text;
  }

  function disconnect() {
    conn.generation += 1;
    clearTimeout(conn.retryTimer);
    clearTimeout(conn.silenceTimer);
    if (conn.controller) conn.controller.abort();
    conn.controller = null;
    conn.live = false;
  }

  async function connect() {
    disconnect();
    const token = storage('get');
    if (!token) {
      setStatus('idle', 'Not connected: paste a monitor token');
      showForm(true);
      return;
    }
    $('change-token').hidden = false;
    const generation = conn.generation;
    const controller = new AbortController();
    conn.controller = controller;
    setStatus('connecting', 'Connecting…');
    let response;
    try {
      response = await fetch(STREAM_URL, {
        headers: { Authorization: `Bearer ${token}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal: controller.signal,
      });
    } catch (_) {
      if (generation === conn.generation) retry('gateway unreachable');
      return;
    }
    if (generation !== conn.generation) return;
    if (response.status === 401 || response.status === 403) {
      refuse(response.status);
      return;
    }
    if (!response.ok || !response.body) {
      retry(`gateway answered ${response.status}`);
      return;
    }
    setStatus('connected', 'Connected: live');
    hideForm();
    try {
      await readEvents(response.body, generation);
      if (generation === conn.generation) retry('the gateway closed the stream');
    } catch (_) {
      if (generation === conn.generation) retry('connection lost');
    }
  }

  // Jittered exponential backoff, so that many dashboards do not return all at once
  // after a gateway restart.
  function retry(reason) {
    disconnect();
    const delay = conn.backoff * (0.8 + Math.random() * 0.4);
    conn.backoff = Math.min(conn.backoff * 2, BACKOFF_MAX_MS);
    setStatus('reconnecting', `Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s (${reason})`);
    conn.retryTimer = setTimeout(connect, delay);
  }

  // Retrying cannot help with a refused token: say why and ask for another.
  function refuse(status) {
    disconnect();
    storage('forget');
    setStatus('error', status === 403
      ? 'Error: the token lacks the monitor role (403)'
      : 'Error: token refused (401): expired, malformed or from an unknown issuer');
    showForm(false);
  }

  function watchSilence(generation) {
    clearTimeout(conn.silenceTimer);
    conn.silenceTimer = setTimeout(() => {
      if (generation === conn.generation) retry('no data for 20 s');
    }, SILENCE_MS);
  }

  async function readEvents(body, generation) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parse = sseParser(dispatch);
    watchSilence(generation);
    for (;;) {
      const { value, done } = await reader.read();
      if (generation !== conn.generation) return;
      if (done) return;
      watchSilence(generation);
      parse(decoder.decode(value, { stream: true }));
    }
  }

  // The text/event-stream format (HTML Living Standard, "Server-sent events"): one field
  // per line, `:` lines are comments, a blank line dispatches. Lines may end in CR LF, LF
  // or CR, and a chunk may end between the CR and the LF.
  function sseParser(onEvent) {
    let buffer = '';
    let event = '';
    let data = null;
    function line(text) {
      if (text === '') {
        if (data !== null) onEvent(event || 'message', data);
        event = '';
        data = null;
        return;
      }
      if (text.startsWith(':')) return;
      const colon = text.indexOf(':');
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? '' : text.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data = data === null ? value : `${data}\n${value}`;
    }
    return (chunk) => {
      buffer += chunk;
      const heldCr = buffer.endsWith('\r');
      if (heldCr) buffer = buffer.slice(0, -1);
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop() + (heldCr ? '\r' : '');
      lines.forEach(line);
    };
  }

  function dispatch(name, data) {
    let payload;
    try {
      payload = JSON.parse(data);
    } catch (_) {
      return; // A broken event is skipped: the next summary is whole.
    }
    if (!payload || typeof payload !== 'object') return;
    try {
      if (name === 'summary') onSummary(payload);
      else if (name === 'alert') addAlert(payload, true);
    } catch (err) {
      // A drawing bug must neither pass for a lost connection nor go unnoticed.
      reportError(err);
    }
  }

  // ---------------------------------------------------------------------------------
  // Rendering. Each summary is whole, so every panel is simply redrawn from it, except
  // the alerts, which are a live region and only ever gain new items.

  const view = {
    history: [], uptime: -1, feedKey: '', seen: false,
    // Alert ids shown, and the shown alerts by what repeats (kind, who, where).
    alertIds: new Set(), alerts: new Map(),
    // Log indexes whose "why" the reader opened.
    openWhy: new Set(),
  };
  // The size of the checkpoint the summary last named: entries below it are in served bundles.
  let checkpointSize = 0;

  function onSummary(s) {
    if (!conn.live) {
      conn.live = true;
      conn.backoff = BACKOFF_MIN_MS;
    }
    // A restarted gateway numbers its alerts from 1 again.
    if (typeof s.uptime_seconds === 'number' && s.uptime_seconds < view.uptime) {
      view.alerts.clear();
      view.alertIds.clear();
      $('alerts').replaceChildren();
      $('alerts-empty').hidden = false;
    }
    view.uptime = s.uptime_seconds;
    if (Array.isArray(s.restricted_countries)) restrictedCountries = new Set(s.restricted_countries);
    if (s.log && typeof s.log.checkpoint_deadline_seconds === 'number') {
      checkpointDeadline = s.log.checkpoint_deadline_seconds;
    }
    renderTotals(s.totals || {}, s.pending_approvals || []);
    renderFleet(s.fleet);
    renderRate(Array.isArray(s.history) ? s.history : [], s.time);
    renderLocations(s.by_location || {});
    renderFeed(Array.isArray(s.recent) ? s.recent : []);
    (Array.isArray(s.alerts) ? s.alerts : []).forEach((a) => addAlert(a, view.seen));
    markReviews(s.break_glass_reviewed || {});
    renderApprovals(s.pending_approvals || []);
    renderCheckpoint(s.log);
    renderEntities(s.by_entity || {});
    renderRuns(s.runs || {});
    $('updated').textContent = `Updated ${clock(s.time)} · gateway up ${duration(s.uptime_seconds)}`;
    view.seen = true;
  }

  function renderTotals(totals, pending) {
    $('total-allow').textContent = number(totals.allow);
    $('total-deny').textContent = number(totals.deny);
    $('total-partial').textContent = number(totals.partial);
    $('total-alerts').textContent = number(totals.alerts);
    $('total-egress').textContent = number(totals.egress_rows);
    $('total-pending').textContent = number(pending.length);
  }

  // Every gateway's decisions, as the shared log records them (this gateway's own included).
  // Null when the log is this gateway's own: then the line is hidden.
  function renderFleet(fleet) {
    $('fleet-totals').parentElement.hidden = !fleet;
    if (!fleet) return;
    const t = fleet.totals || {};
    const locations = Object.entries((fleet && fleet.by_location) || {})
      .map(([place, c]) => `${place} ${number(c.allow + c.deny + c.partial)}`)
      .join(', ');
    $('fleet-totals').textContent =
      `${number(t.allow)} allowed · ${number(t.deny)} denied · ${number(t.partial)} partial` +
      (locations ? ` (by location: ${locations})` : '');
  }

  function renderRate(history, time) {
    view.history = history;
    const canvas = $('rate-chart');
    const sums = { allow: 0, deny: 0, partial: 0 };
    history.forEach((second) => OUTCOMES.forEach((o) => { sums[o] += second[o] || 0; }));
    const peak = Math.max(0, ...history.map(count));
    canvas.dataset.total = String(sums.allow + sums.deny + sums.partial);
    canvas.dataset.updated = time || '';
    // The picture's words, for screen readers.
    canvas.setAttribute('aria-label', `Last 60 seconds: ${sums.allow} allowed, ${sums.deny} denied, `
      + `${sums.partial} partial; at most ${peak} in one second`);
    drawRate();
  }

  function palette() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return {
      allow: v('--allow'), deny: v('--deny'), partial: v('--partial'),
      grid: v('--line'), text: v('--muted'), font: `12px ${v('--font')}`,
    };
  }

  // The smallest of 1, 2, 5, 10, 20, 50... at least `x`: round gridline values.
  function niceStep(x) {
    const power = 10 ** Math.floor(Math.log10(Math.max(x, 1)));
    return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= x);
  }

  function drawRate() {
    const canvas = $('rate-chart');
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    // A backing store at device resolution keeps bars and text sharp.
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const p = palette();
    const history = view.history;
    const pad = { left: 40, right: 10, top: 10, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    // Scaled to the traffic most seconds carry, so that a burst (the start, a batch) does not
    // flatten a steady rate: a second far above the rest is drawn to the top, its count on it.
    const counts = history.map(count);
    const typical = [...counts].sort((a, b) => a - b)[Math.floor(counts.length * 0.9)] || 0;
    const peak = Math.max(0, ...counts);
    const scaleTo = peak > 3 * Math.max(typical, 2) ? 2 * Math.max(typical, 2) : peak;
    const step = niceStep(Math.max(scaleTo, 4) / 4);
    const top = step * 4;
    const y = (v) => pad.top + plotH - (Math.min(v, top) / top) * plotH;

    ctx.font = p.font;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i += 1) {
      const gy = Math.round(y(step * i)) + 0.5;
      ctx.strokeStyle = p.grid;
      ctx.beginPath();
      ctx.moveTo(pad.left, gy);
      ctx.lineTo(width - pad.right, gy);
      ctx.stroke();
      ctx.fillStyle = p.text;
      ctx.fillText(String(step * i), pad.left - 8, gy);
    }

    const slots = Math.max(history.length, 60);
    const slotW = plotW / slots;
    const barW = Math.max(1, slotW * 0.72);
    const offset = slots - history.length;
    history.forEach((second, i) => {
      const x = pad.left + (offset + i) * slotW + (slotW - barW) / 2;
      let base = 0;
      OUTCOMES.forEach((o) => {
        const n = second[o] || 0;
        if (!n) return;
        ctx.fillStyle = p[o];
        ctx.fillRect(x, y(base + n), barW, y(base) - y(base + n));
        base += n;
      });
      if (base > top) {
        ctx.fillStyle = p.text;
        ctx.textAlign = 'center';
        ctx.textBaseline = 'top';
        ctx.fillText(`▲${base}`, x + barW / 2, pad.top + 1);
      }
    });

    ctx.fillStyle = p.text;
    ctx.textBaseline = 'top';
    [[0, '60 s ago'], [15, '45 s'], [30, '30 s'], [45, '15 s'], [60, 'now']].forEach(([at, label]) => {
      ctx.textAlign = at === 0 ? 'left' : at === 60 ? 'right' : 'center';
      ctx.fillText(label, pad.left + (at / 60) * plotW, height - pad.bottom + 6);
    });
  }

  function renderLocations(byLocation) {
    const box = $('location-chart');
    const rows = Object.entries(byLocation)
      .map(([code, counts]) => ({ code, counts, n: count(counts) }))
      .sort((a, b) => b.n - a.n || a.code.localeCompare(b.code));
    const max = Math.max(1, ...rows.map((r) => r.n));
    box.dataset.total = String(rows.reduce((sum, r) => sum + r.n, 0));
    if (!rows.length) {
      box.replaceChildren(el('p', 'empty', 'No decisions yet.'));
      return;
    }
    box.replaceChildren(...rows.map(({ code, counts, n }) => {
      const row = el('div', restricted(code) ? 'hbar restricted' : 'hbar');
      row.dataset.location = code;
      const label = el('div', 'hbar-label');
      label.append(el('span', 'code', code));
      if (restricted(code)) label.append(el('span', 'tag', 'restricted'));
      const track = el('div', 'hbar-track');
      OUTCOMES.forEach((o) => {
        if (!counts[o]) return;
        const segment = el('span', `seg seg-${o}`);
        segment.style.width = `${(counts[o] / max) * 100}%`;
        segment.title = `${counts[o]} ${o}`;
        track.append(segment);
      });
      const value = el('div', 'hbar-value', number(n));
      const words = el('span', 'visually-hidden',
        `: ${counts.allow || 0} allowed, ${counts.deny || 0} denied, ${counts.partial || 0} partial`);
      value.append(words);
      row.append(label, track, value);
      return row;
    }));
  }

  const cell = (text, className) => el('td', className, text);

  function badge(outcome) {
    const known = OUTCOMES.includes(outcome) ? outcome : 'other';
    return el('span', `badge badge-${known}`, outcome || '?');
  }

  function renderFeed(recent) {
    // Rebuilt only when it changed, so a reader's selection is not wiped every second.
    const key = `${recent.length}:${recent.length ? recent[0].log_index : ''}`;
    if (key === view.feedKey) return;
    view.feedKey = key;
    const rows = recent.map((d) => {
      const tr = el('tr');
      tr.dataset.outcome = d.outcome;
      const time = cell(clock(d.time), 'nowrap');
      time.title = d.time || '';
      const where = cell(d.location, restricted(d.location) ? 'loc restricted' : 'loc');
      if (restricted(d.location)) where.append(el('span', 'tag', 'restricted'));
      const outcome = el('td');
      outcome.append(badge(d.outcome));
      tr.append(
        time, cell(d.principal), cell(d.entity), where, cell(d.action),
        cell(d.subject, 'mono'),
        cell(d.collection === null || d.collection === undefined ? '— (subject)' : d.collection,
          d.collection ? '' : 'muted'),
        outcome, logCell(d.log_index), whyCell(d),
      );
      return tr;
    });
    const shown = new Set(recent.map((d) => d.log_index));
    view.openWhy.forEach((index) => { if (!shown.has(index)) view.openWhy.delete(index); });
    $('feed').tBodies[0].replaceChildren(...rows);
    $('feed-empty').hidden = rows.length > 0;
  }

  // Why the decision came out as it did: the site, the deciding policies, the purpose and
  // reason, the grant and each field class's verdict, behind a disclosure that stays open
  // across redraws.
  function whyCell(d) {
    const td = el('td', 'why');
    const details = el('details');
    details.dataset.index = String(d.log_index);
    details.open = view.openWhy.has(d.log_index);
    const policies = Array.isArray(d.policies) && d.policies.length
      ? d.policies.join(', ')
      : (d.outcome === 'allow' ? '–' : 'no policy permitted it');
    details.append(el('summary', '', d.outcome === 'allow' ? 'why' : 'why not'));
    const facts = el('dl', 'why-facts');
    [
      ['decided by', policies],
      ['fields', Array.isArray(d.classes) && d.classes.length ? d.classes.join('; ') : '— (subject)'],
      ['purpose', d.purpose ? `${d.purpose}${d.reason_code ? ` (${d.reason_code})` : ''}` : 'none stated'],
      ['grant', d.grant || 'none'],
      ['site', `${d.site || '?'} · subject in ${d.subject_jurisdiction || '?'}`],
    ].forEach(([term, value]) => {
      const row = el('div');
      row.append(el('dt', '', term), el('dd', '', value));
      facts.append(row);
    });
    details.append(facts);
    td.append(details);
    return td;
  }

  // A log index that opens its entry.
  function logCell(index) {
    const td = el('td', 'num mono');
    if (typeof index !== 'number') {
      td.textContent = '–';
      return td;
    }
    const button = el('button', 'log-link', String(index));
    button.type = 'button';
    button.dataset.index = String(index);
    button.title = `Show log entry ${index}`;
    td.append(button);
    return td;
  }

  // The C2SP tlog-tiles path of the entry bundle holding `index`, in a tree of `size`.
  function bundlePath(index, size) {
    const n = Math.floor(index / 256);
    const digits = String(n).padStart(3 * Math.max(1, Math.ceil(String(n).length / 3)), '0');
    const groups = digits.match(/.{3}/g);
    const path = groups.map((g, i) => (i < groups.length - 1 ? `x${g}` : g)).join('/');
    const width = Math.min(256, size - n * 256);
    return `/log/tile/entries/${path}${width < 256 ? `.p/${width}` : ''}`;
  }

  // Shows entry `index` as the log serves it: from its entry bundle (length-prefixed
  // entries), within the checkpoint the summary last named.
  async function openEntry(index) {
    const view = $('entry-view');
    const out = $('entry-json');
    $('entry-h').textContent = `Log entry ${index}`;
    view.hidden = false;
    const size = checkpointSize;
    if (!(index < size)) {
      out.textContent = `Entry ${index} is not yet in a signed checkpoint (size ${size}); it will be in a moment.`;
      return;
    }
    out.textContent = 'Loading…';
    try {
      const response = await fetch(bundlePath(index, size), { cache: 'no-store' });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const bytes = new Uint8Array(await response.arrayBuffer());
      let at = 0;
      for (let k = 0; k < index % 256; k += 1) {
        at += 2 + ((bytes[at] << 8) | bytes[at + 1]);
      }
      const length = (bytes[at] << 8) | bytes[at + 1];
      if (at + 2 + length > bytes.length) throw new Error('the bundle is shorter than its entries say');
      const text = new TextDecoder().decode(bytes.subarray(at + 2, at + 2 + length));
      out.textContent = JSON.stringify(JSON.parse(text), null, 2);
    } catch (e) {
      out.textContent = `Could not read entry ${index}: ${e.message}`;
    }
  }

  // Alerts come twice (as an `alert` event and in later summaries). The gateway raises an
  // alert about a principal once per `alert_repeat_seconds` and counts the repeats on it
  // (`repeats`); the page also folds alerts of the same kind, principal and location into
  // one line, moved to the top by the newest, with "×N": nothing repeated pushes the others
  // out. Lines are kept newest first.
  function addAlert(a, fresh) {
    if (!a || typeof a.id !== 'number') return;
    // Every break-glass use is a grant to review on its own: never folded.
    const key = a.break_glass
      ? `break-glass|${a.break_glass}`
      : [a.alert, a.principal, a.entity, a.location].join('|');
    const times = 1 + (Number(a.repeats) || 0);
    let group = view.alerts.get(key);
    if (view.alertIds.has(a.id)) {
      // Seen before: only its repeats may have grown.
      if (group && group.ids.has(a.id)) {
        group.ids.set(a.id, times);
        showCount(group);
      }
      return;
    }
    view.alertIds.add(a.id);
    // Ids are remembered only to count each once; the oldest are long off the page.
    if (view.alertIds.size > 5000) view.alertIds.delete(view.alertIds.values().next().value);
    if (group && group.lastId > a.id) {
      // An older one, seen late: counted; the line stays where its newest put it.
      group.ids.set(a.id, times);
      showCount(group);
      return;
    }
    const list = $('alerts');
    const severity = a.severity === 'high' ? 'high' : 'warning';
    const li = el('li', `alert sev-${severity}`);
    li.dataset.alert = String(a.alert);
    li.dataset.id = String(a.id);
    const head = el('div', 'alert-head');
    head.append(el('span', `sev sev-${severity}`, severity), el('strong', 'alert-name', a.alert));
    const count = el('span', 'alert-count', '');
    head.append(count);
    const when = el('time', 'alert-time', clock(a.time));
    when.dateTime = a.time || '';
    head.append(when);
    li.append(head, el('p', 'alert-msg', a.message));
    const who = [a.principal, a.entity, a.location].filter(Boolean).join(' · ');
    const meta = [who, a.log_index === null || a.log_index === undefined
      ? 'not in the log' : `log #${a.log_index}`].filter(Boolean).join(' · ');
    li.append(el('p', 'alert-meta', meta));
    if (a.break_glass) {
      // Filled in by markReviews from each summary.
      const review = el('p', 'alert-review', '');
      review.dataset.breakGlass = a.break_glass;
      li.append(review);
    }
    if (group) group.li.remove();
    const ids = group ? group.ids : new Map();
    ids.set(a.id, times);
    group = { li, count, ids, lastId: a.id };
    view.alerts.set(key, group);
    showCount(group);
    const before = [...list.children].find((child) => Number(child.dataset.id) < a.id) || null;
    list.insertBefore(li, before);
    while (list.children.length > ALERTS_KEPT) {
      const last = list.lastElementChild;
      for (const [k, g] of view.alerts) if (g.li === last) view.alerts.delete(k);
      last.remove();
    }
    $('alerts-empty').hidden = true;
    if (fresh) {
      li.classList.add('fresh');
      setTimeout(() => li.classList.remove('fresh'), 6000);
    }
  }

  // A break-glass alert says whether a custodian has reviewed the use yet.
  function markReviews(reviewed) {
    document.querySelectorAll('#alerts .alert-review').forEach((p) => {
      const state = reviewed[p.dataset.breakGlass];
      if (state === undefined) return;
      p.textContent = state ? `${p.dataset.breakGlass}: reviewed` : `${p.dataset.breakGlass}: not reviewed yet`;
      p.classList.toggle('warn', !state);
    });
  }

  // "×N" on a folded alert line: every alert and repeat it stands for.
  function showCount(group) {
    let n = 0;
    group.ids.forEach((times) => { n += times; });
    group.count.textContent = n > 1 ? `×${n}` : '';
    group.count.title = n > 1 ? `${n} times (repeats within the alert interval are counted, not logged again)` : '';
  }

  function renderApprovals(pending) {
    $('approvals').replaceChildren(...pending.map((r) => {
      const li = el('li', 'approval');
      const head = el('div', 'approval-head');
      head.append(
        el('strong', '', r.requester),
        el('span', '', ` wants to ${r.action} `),
        el('span', 'mono', (r.collections || []).join(', ') || 'everything'),
        el('span', 'progress', `${r.approvals}/${r.approvals_required} approvals`),
      );
      li.append(head, el('p', 'approval-why', `${r.reason_code || ''}: ${r.purpose || ''}`));
      li.append(el('p', 'approval-id mono', r.id));
      return li;
    }));
    $('approvals-empty').hidden = pending.length > 0;
  }

  function renderCheckpoint(log) {
    if (!log) return;
    if (typeof log.checkpoint_size === 'number') checkpointSize = log.checkpoint_size;
    $('cp-size').textContent = number(log.size);
    const uncovered = (log.size || 0) - (log.checkpoint_size || 0);
    $('cp-checkpoint').textContent = number(log.checkpoint_size)
      + (uncovered > 0 ? ` (${number(uncovered)} not yet covered)` : ' (all covered)');
    // An idle log keeps an old checkpoint, and rightly: only entries waiting for one
    // past the deadline are a problem (the gateway's checkpoint-late alert agrees).
    const age = Number(log.checkpoint_age_seconds) || 0;
    const late = age > checkpointDeadline && uncovered > 0;
    const ageCell = $('cp-age');
    ageCell.textContent = `${age.toFixed(1)} s${late ? ' — late' : ''}`;
    ageCell.classList.toggle('warn', late);
    $('checkpoint').classList.toggle('warn', late);
    const root = String(log.root_hash || '');
    const rootCell = $('cp-root');
    rootCell.textContent = root.length > 20 ? `${root.slice(0, 20)}…` : root;
    rootCell.title = root;
    $('cp-origin').textContent = log.origin || '–';
    renderWitnesses(log.witnessing);
  }

  // With witnesses, the checkpoint shown is the newest one a quorum cosigned; say which
  // witnesses fail, since they are why it would stop advancing.
  function renderWitnesses(w) {
    $('cp-witnesses-row').hidden = !w;
    $('witnesses').hidden = !w;
    if (!w) return;
    const list = w.witnesses || [];
    const ok = list.filter((x) => x.ok).length;
    const cell = $('cp-witnesses');
    cell.textContent = `${ok} of ${list.length} answering, quorum ${w.quorum}`;
    cell.classList.toggle('warn', ok < w.quorum);
    $('witnesses').replaceChildren(...list.map((x) => {
      const li = el('li', x.ok ? 'witness ok' : 'witness warn',
        `${x.ok ? '✓' : '✗'} ${x.name}`);
      li.title = x.url;
      if (!x.ok && x.last_error) {
        li.append(el('p', 'witness-error', `${x.failures} failure(s): ${x.last_error}`));
      } else if (x.cosigned_size !== null && x.cosigned_size !== undefined) {
        li.append(el('p', 'witness-ok', `cosigned ${number(x.cosigned_size)} entries`));
      }
      return li;
    }));
  }

  function renderEntities(byEntity) {
    const rows = Object.entries(byEntity)
      .sort(([a, x], [b, y]) => count(y) - count(x) || a.localeCompare(b))
      .map(([entity, c]) => {
        const tr = el('tr');
        const name = el('th', '', entity);
        name.scope = 'row';
        tr.append(name, ...OUTCOMES.map((o) => cell(number(c[o] || 0), `num n-${o}`)));
        return tr;
      });
    $('entities').tBodies[0].replaceChildren(...rows);
  }

  const RUN_OUTCOMES = ['ok', 'failed', 'denied', 'stopped'];

  function renderRuns(byAlgorithm) {
    const rows = Object.entries(byAlgorithm)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([algorithm, c]) => {
        const tr = el('tr');
        const name = el('th', '', algorithm);
        name.scope = 'row';
        tr.append(name, ...RUN_OUTCOMES.map((o) => cell(number(c[o] || 0), 'num')));
        return tr;
      });
    $('runs').tBodies[0].replaceChildren(...rows);
    $('runs-empty').hidden = rows.length > 0;
  }

  // ---------------------------------------------------------------------------------
  // Start.

  function start() {
    takeTokenFromAddress();
    $('feed').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-index]');
      if (button) openEntry(Number(button.dataset.index));
    });
    $('entry-close').addEventListener('click', () => { $('entry-view').hidden = true; });
    // `toggle` does not bubble: listened to on the way down.
    $('feed').addEventListener('toggle', (event) => {
      const index = Number(event.target.dataset && event.target.dataset.index);
      if (!Number.isFinite(index)) return;
      if (event.target.open) view.openWhy.add(index); else view.openWhy.delete(index);
    }, true);
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('token-input').value.trim();
      if (!token) return;
      storage('set', token);
      hideForm();
      conn.backoff = BACKOFF_MIN_MS;
      connect();
    });
    $('change-token').addEventListener('click', () => {
      disconnect();
      storage('forget');
      setStatus('idle', 'Disconnected: paste a monitor token');
      showForm(true);
    });
    // The chart's box changes with the window and with its neighbours' content.
    new ResizeObserver(() => drawRate()).observe($('rate-chart').parentElement);
    window.addEventListener('pagehide', disconnect);
    window.addEventListener('pageshow', (event) => { if (event.persisted) connect(); });
    // A link with another token, opened in this tab, changes only the fragment: no reload.
    window.addEventListener('hashchange', () => {
      if (takeTokenFromAddress()) {
        conn.backoff = BACKOFF_MIN_MS;
        connect();
      }
    });
    drawRate();
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
