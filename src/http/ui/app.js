// The ductile dashboard: plain DOM over the daemon's own API. Text reaches
// the page only through textContent (never innerHTML), so nothing a plugin
// writes can become markup. Signing in trades the token for an HttpOnly
// session cookie (POST /session): the page never keeps the token, and every
// request that changes anything carries the session's CSRF token. Live
// updates come from GET /events read as a fetch stream, which resumes with
// Last-Event-ID after a drop.
'use strict';

// The API root, relative to this page: `/ui/` under any proxy prefix.
const BASE = new URL('../', location.href);
const $ = (sel) => document.querySelector(sel);
// The session's CSRF token (from POST or GET /session); null when signed out.
let csrf = null;
let scopes = {};
let stream = null;
let lastEventId = null;
let refreshTimer = null;
let openJob = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  return e;
}

async function api(path, opts = {}) {
  const method = opts.method || 'GET';
  const headers = {};
  if (csrf && !['GET', 'HEAD'].includes(method)) headers['X-CSRF-Token'] = csrf;
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let r;
  try {
    r = await fetch(new URL(path.replace(/^\//, ''), BASE), {
      method, headers, body, cache: 'no-store', credentials: 'same-origin',
    });
  } catch (e) {
    return { status: 0, ok: false, data: { error: 'the daemon cannot be reached' } };
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && csrf && !opts.quiet) signedOut('The session has ended (401); sign in again.');
  return { status: r.status, ok: r.ok, data };
}

function notice(text) {
  const n = $('#notice');
  n.textContent = text || '';
  n.hidden = !text;
}

// A refusal in words: the server's own message, with the status.
function refusal(r) {
  const why = r.data && r.data.error ? r.data.error : 'HTTP ' + r.status;
  return (r.status === 403 ? 'Refused: ' : 'Failed: ') + why + ' (' + r.status + ')';
}

// ------------------------------------------------------------------ session

// Trades the token for the session cookie; the token is not kept anywhere.
async function signIn(candidate) {
  const r = await api('/session', { method: 'POST', body: { token: candidate }, quiet: true });
  $('#token').value = '';
  if (r.status !== 201) {
    $('#login-error').textContent = r.status === 0
      ? 'The daemon cannot be reached.'
      : r.status === 401
        ? 'That token is not accepted by this daemon (tokens come from api.auth.tokens or tokens.yaml; see docs/UI.md).'
        : refusal(r);
    return;
  }
  await enter(r.data);
}

// Resumes the session the cookie holds (a reload, a new tab), if any.
async function resume() {
  const r = await api('/session', { quiet: true });
  if (r.status === 200) await enter(r.data);
}

// Shows what the session's scopes allow, probing the routes each view reads.
async function enter(session) {
  csrf = session.csrf_token;
  const probes = {
    // Filtered on status, so the probe reads an index, not the whole queue.
    jobs: api('/jobs?status=running&limit=1'),
    events: api('/events', { method: 'HEAD' }),
    plugin: api('/topology'),
    admin: api('/analytics/queue'),
  };
  scopes = {};
  for (const [k, p] of Object.entries(probes)) scopes[k] = (await p).ok;
  $('#login-error').textContent = '';
  $('#login').hidden = true;
  $('#nav').hidden = false;
  $('#who').textContent = session.name;
  document.body.dataset.scopes = Object.keys(scopes).filter((k) => scopes[k]).join(' ');
  $('[data-view="jobs"]').hidden = !scopes.jobs;
  $('[data-view="schedules"]').hidden = !scopes.jobs;
  $('[data-view="pipelines"]').hidden = !scopes.admin;
  show(location.hash.slice(1) || 'overview');
  if (scopes.events) connect();
}

// Ends the session on the daemon (the cookie is cleared by its answer).
async function signOut() {
  if (csrf) await api('/session', { method: 'DELETE', quiet: true });
  signedOut('Signed out.');
}

function signedOut(why) {
  csrf = null;
  scopes = {};
  if (stream) stream.abort();
  stream = null;
  lastEventId = null;
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== 'login';
  $('#nav').hidden = true;
  $('#who').textContent = '';
  $('#live').textContent = 'offline';
  delete document.body.dataset.scopes;
  history.replaceState(null, '', '#');
  $('#login-error').textContent = why || '';
  notice('');
}

// ------------------------------------------------------------------ views

const VIEWS = { overview: loadOverview, jobs: loadJobs, plugins: loadPlugins, schedules: loadSchedules, pipelines: loadPipelines };

// A view the token's scopes do not allow falls back to the overview.
function allowed(view) {
  if (view === 'jobs' || view === 'schedules') return scopes.jobs;
  if (view === 'pipelines') return scopes.admin;
  return !!VIEWS[view];
}

function show(view) {
  if (!allowed(view)) view = 'overview';
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== view;
  for (const b of document.querySelectorAll('#nav [data-view]')) {
    if (b.dataset.view === view) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  if (location.hash !== '#' + view) history.replaceState(null, '', '#' + view);
  notice('');
  VIEWS[view]();
}

function current() {
  const s = document.querySelector('main > section:not([hidden])');
  return s ? s.id : null;
}

function ago(iso) {
  if (!iso) return '-';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 120) return s + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  return Math.round(s / 3600) + ' h';
}

async function loadOverview() {
  const h = await api('/healthz');
  if (h.data) {
    $('#stat-version').textContent = h.data.version || '-';
    $('#stat-uptime').textContent = ago(new Date(Date.now() - 1000 * h.data.uptime_seconds).toISOString());
    $('#stat-queued').textContent = String(h.data.queue_depth);
    $('#stat-breakers').textContent = String(h.data.plugins_circuit_open);
  }
  if (scopes.admin) {
    const q = await api('/analytics/queue');
    const st = q.ok && q.data.storage ? q.data.storage : {};
    $('#stat-db').textContent = bytes(st.db_bytes);
    $('#stat-wal').textContent = bytes(st.wal_bytes);
    $('#stat-free').textContent = bytes(st.free_bytes);
  }
  if (!scopes.jobs) return;
  const since = (ms) => new Date(Date.now() - ms).toISOString().replace(/\.\d+Z$/, 'Z');
  const [running, failed, hour] = await Promise.all([
    api('/jobs?status=running&limit=200'),
    api('/job-logs?status=error&limit=1&from=' + encodeURIComponent(since(864e5))),
    api('/job-logs?limit=200&from=' + encodeURIComponent(since(36e5))),
  ]);
  if (running.ok) {
    $('#stat-running').textContent = String(running.data.total);
    $('#running').replaceChildren(...running.data.jobs.map((j) => el('li', {},
      jobLink(j.job_id), ' ' + j.plugin + ' ' + j.command + ', running for ' + ago(j.started_at))));
  }
  if (failed.ok) $('#stat-failed').textContent = String(failed.data.total);
  if (hour.ok) spark(hour.data.logs);
}

function bytes(n) {
  if (typeof n !== 'number') return '-';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}

function spark(logs) {
  const buckets = new Array(12).fill(0);
  const now = Date.now();
  for (const l of logs) {
    const i = 11 - Math.floor((now - Date.parse(l.completed_at)) / 3e5);
    if (i >= 0 && i < 12) buckets[i] += 1;
  }
  const max = Math.max(1, ...buckets);
  const pts = buckets.map((n, i) => (i * 240 / 11).toFixed(1) + ',' + (38 - 36 * n / max).toFixed(1));
  $('#spark').replaceChildren(svgEl('polyline', { points: pts.join(' '), class: 'line' }),
    svgEl('title', { text: buckets.join(', ') + ' per 5 min' }));
}

// Ids are UUIDv7: their start is the time, shared by neighbours, so the
// random end is what tells jobs apart at a glance.
function jobLink(id) {
  return el('a', { href: '#jobs', 'data-job-id': id, onclick: (e) => { e.preventDefault(); show('jobs'); openDetail(id); } },
    el('code', { text: id.slice(-8), title: id }));
}

// Filters on finished attempts (who submitted, when, text) read the job log
// (`GET /job-logs`); the others the queue (`GET /jobs`). Both are newest first.
const LOG_FILTERS = ['submitted_by', 'from', 'to', 'query'];

// The queue list pages with the API's cursor (`before`); **Show more**
// appends the next page. Job-log filters raise the limit instead.
let nextCursor = null;

// The data each live list was last drawn from. A refresh that brings the same
// data keeps the rows, so focus, hover and a click in flight stay on the row
// the user meant.
const drawn = {};
function sameAsDrawn(list, data) {
  const now = JSON.stringify(data);
  if (drawn[list] === now) return true;
  drawn[list] = now;
  return false;
}

async function loadJobs(more) {
  if (!scopes.jobs) return;
  const q = new URLSearchParams();
  for (const k of ['plugin', 'command', 'status', 'limit', ...LOG_FILTERS]) {
    const v = $('#f-' + k).value.trim();
    if (v) q.set(k, v);
  }
  const logs = LOG_FILTERS.some((k) => q.has(k));
  const paging = more === true && !logs && nextCursor;
  if (paging) q.set('before', nextCursor);
  const r = await api((logs ? '/job-logs?' : '/jobs?') + q);
  if (!r.ok) { notice(refusal(r)); return; }
  const rows = logs ? r.data.logs : r.data.jobs;
  const body = $('#jobs-table tbody');
  const keep = !paging && sameAsDrawn('jobs', [logs, rows]);
  if (paging) drawn.jobs = null;
  if (!keep) {
    const trs = rows.map((j) => el('tr', { 'data-job-id': j.job_id, 'data-status': j.status },
      el('td', {}, jobLink(j.job_id)), el('td', { text: j.plugin }), el('td', { text: j.command }),
      el('td', {}, el('span', { class: 'status ' + j.status, text: j.status })),
      el('td', { text: String(j.attempt) }), el('td', { text: (logs ? j.completed_at : j.created_at) || '' })));
    if (paging) body.append(...trs); else body.replaceChildren(...trs);
  }
  const shown = body.children.length;
  $('#jobs-total').textContent = shown + ' of ' + r.data.total + (logs ? ' attempts' : ' jobs');
  if (logs) {
    const limit = Number($('#f-limit').value) || 50;
    $('#jobs-more').hidden = rows.length >= r.data.total || limit >= 200;
  } else {
    nextCursor = r.data.next_cursor || null;
    $('#jobs-more').hidden = !nextCursor;
  }
  if (openJob && !paging) openDetail(openJob);
}

function fields(obj) {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v === null || v === undefined) continue;
    const text = typeof v === 'object' ? JSON.stringify(v, null, 2) : String(v);
    out.push(el('dt', { text: k }), el('dd', {}, text.includes('\n') || text.length > 60 ? el('pre', { text }) : text));
  }
  return out;
}

async function openDetail(id) {
  openJob = id;
  const [job, logs, tree] = await Promise.all([
    api('/job/' + encodeURIComponent(id)),
    api('/job-logs?include_result=true&limit=200&job_id=' + encodeURIComponent(id)),
    api('/job/' + encodeURIComponent(id) + '/tree'),
  ]);
  if (!job.ok) { notice(refusal(job)); return; }
  const j = job.data;
  $('#job-detail').hidden = false;
  $('#job-detail').dataset.jobId = j.job_id;
  $('#job-detail').dataset.status = j.status;
  $('#jd-id').textContent = j.job_id;
  $('#jd-status').textContent = j.status;
  $('#jd-status').className = 'status ' + j.status;
  $('#jd-retry').hidden = !['failed', 'timed_out', 'dead'].includes(j.status);
  $('#jd-cancel').hidden = !['queued', 'running'].includes(j.status);
  $('#jd-fields').replaceChildren(...fields(j));
  const items = [];
  if (j.parent_job_id) items.push(el('li', {}, 'caused by ', jobLink(j.parent_job_id)));
  if (tree.ok) {
    for (const t of tree.data) {
      if (t.job_id === j.job_id) continue;
      items.push(el('li', {}, jobLink(t.job_id), ' ' + t.plugin + ' ' + t.command + ' ', el('span', { class: 'status ' + t.status, text: t.status })));
    }
  }
  $('#jd-tree').replaceChildren(...(items.length ? items : [el('li', { text: 'no other job in its tree' })]));
  const attempts = logs.ok ? logs.data.logs.slice().reverse() : [];
  $('#jd-attempts').replaceChildren(...attempts.map((l) => el('section', { class: 'attempt', 'data-attempt': String(l.attempt) },
    el('h5', { text: 'Attempt ' + l.attempt + ': ' + l.status + ' at ' + l.completed_at }),
    el('dl', {}, ...fields({ last_error: l.last_error, stderr: l.stderr, warnings: l.warnings, result: l.result })))));
}

async function retry() {
  const r = await api('/job/' + encodeURIComponent(openJob) + '/retry', { method: 'POST', body: {} });
  if (r.ok) {
    $('#jd-message').textContent = 'Retry queued as ' + r.data.job_id;
    openDetail(r.data.job_id);
  } else {
    $('#jd-message').textContent = refusal(r);
  }
}

async function cancelJob() {
  const id = openJob;
  const r = await api('/job/' + encodeURIComponent(id) + '/cancel', { method: 'POST' });
  if (r.ok) {
    $('#jd-message').textContent = r.data.cancelled ? 'Cancelled ' + id : 'Cancelling ' + id + ': its process is being stopped';
    openDetail(id);
  } else {
    $('#jd-message').textContent = refusal(r);
  }
}

async function loadSchedules() {
  if (!scopes.jobs) return;
  const r = await api('/schedules');
  if (!r.ok) { notice(refusal(r)); return; }
  if (sameAsDrawn('schedules', r.data.schedules)) return;
  const rows = r.data.schedules.map((s) => {
    const paused = s.status === 'paused_manual';
    const act = (verb) => async () => {
      const a = await api('/schedule/' + encodeURIComponent(s.name) + '/' + verb, { method: 'POST' });
      $('#sched-message').textContent = a.ok
        ? 'Schedule ' + s.name + (a.data.changed ? (verb === 'pause' ? ' paused' : ' resumed') : ' unchanged (' + a.data.status + ')')
        : refusal(a);
      if (a.ok) loadSchedules();
    };
    return el('tr', { 'data-schedule': s.name, 'data-status': s.status },
      el('td', { text: s.name }), el('td', { text: s.trigger + ' (' + s.timezone + ')' }),
      el('td', {}, el('span', { class: 'status ' + s.status, text: s.status })),
      el('td', { text: (s.next_firings || []).join(', ') || '-' }),
      el('td', { text: s.last_fired_at || '-' }), el('td', { text: s.last_success_at || '-' }),
      el('td', {},
        el('button', { type: 'button', class: paused ? 'resume' : 'pause', text: paused ? 'Resume' : 'Pause', onclick: act(paused ? 'resume' : 'pause') }), ' ',
        el('button', { type: 'button', class: 'explain', text: 'Why didn\'t it run?', onclick: () => explain(s.name) })));
  });
  $('#sched-table tbody').replaceChildren(...rows);
}

async function explain(name) {
  const r = await api('/schedule/' + encodeURIComponent(name) + '/explain');
  if (!r.ok) { $('#sched-message').textContent = refusal(r); return; }
  $('#sched-explain').hidden = false;
  $('#se-name').textContent = name;
  $('#se-sentences').replaceChildren(...r.data.sentences.map((t) => el('li', { text: t })));
}

async function loadPlugins() {
  const r = await api('/plugins');
  if (!r.ok) { notice(refusal(r)); return; }
  const cards = [];
  for (const p of r.data.plugins) {
    const detail = scopes.plugin ? await api('/plugin/' + encodeURIComponent(p.name)) : null;
    const watch = scopes.jobs ? await api('/stopwatch/' + encodeURIComponent(p.name)) : null;
    const cmds = detail && detail.ok ? detail.data.commands : p.commands.map((name) => ({ name }));
    const timing = watch && watch.ok ? watch.data.commands || {} : {};
    cards.push(el('article', { class: 'plugin', 'data-plugin': p.name },
      el('h3', { text: p.name + ' ' + (p.version || '') }),
      el('p', { text: p.description || '' }),
      el('p', {}, el('button', { type: 'button', class: 'breaker-reset', text: 'Reset circuit breakers', onclick: async () => {
        const b = await api('/plugin/' + encodeURIComponent(p.name) + '/breaker/reset', { method: 'POST' });
        $('#plugin-message').textContent = !b.ok ? refusal(b) : b.data.reset.length
          ? 'Reset to closed: ' + p.name + ' ' + b.data.reset.join(', ')
          : 'No breaker of ' + p.name + ' was open';
      } })),
      ...cmds.map((c) => commandForm(p.name, c, timing[c.name]))));
  }
  $('#plugin-list').replaceChildren(...cards);
}

// A "run now" form: one field per property of the command's input_schema.
function commandForm(plugin, c, timing) {
  const props = (c.input_schema && c.input_schema.properties) || {};
  const inputs = Object.entries(props).map(([name, s]) => {
    const type = s && s.type === 'boolean' ? 'checkbox' : s && (s.type === 'integer' || s.type === 'number') ? 'number' : 'text';
    const input = el('input', { name, type, 'data-type': (s && s.type) || 'string' });
    return el('label', {}, name + ' ', input);
  });
  const t = timing && timing.p50_ms !== undefined ? ' p50 ' + timing.p50_ms + ' ms, p95 ' + timing.p95_ms + ' ms' : '';
  const form = el('form', { class: 'command', 'data-command': c.name },
    el('span', { text: c.name + (c.type ? ' (' + c.type + ')' : '') + t }), ...inputs,
    el('button', { type: 'submit', text: 'Run ' + c.name }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const payload = {};
    for (const i of form.querySelectorAll('input')) {
      if (i.type === 'checkbox') payload[i.name] = i.checked;
      else if (i.value !== '') payload[i.name] = i.type === 'number' ? Number(i.value) : i.value;
    }
    const r = await api('/plugin/' + encodeURIComponent(plugin) + '/' + encodeURIComponent(c.name), { method: 'POST', body: { payload } });
    $('#plugin-message').textContent = r.ok ? 'Queued ' + plugin + ' ' + c.name + ' as ' + r.data.job_id : refusal(r);
  });
  return form;
}

let routes = {};

async function loadPipelines() {
  const r = await api('/config/view');
  if (!r.ok) { notice(refusal(r)); return; }
  routes = r.data.compiled_routes || {};
  const pick = $('#pipeline-pick');
  const was = pick.value;
  pick.replaceChildren(...Object.keys(routes).map((n) => el('option', { text: n, value: n })));
  if (was && routes[was]) pick.value = was;
  drawGraph(pick.value);
}

// Hops in layers by distance from the entry; switch hops are diamonds with
// their true/false edges labelled, a split is a hop with several successors.
function drawGraph(name) {
  const svg = $('#graph');
  const p = routes[name];
  if (!p) { svg.replaceChildren(); return; }
  const byId = {};
  for (const h of p.hops) byId[h.id] = h;
  const layer = {};
  const queue = p.entry.map((id) => [id, 0]);
  while (queue.length) {
    const [id, d] = queue.shift();
    if (layer[id] !== undefined || !byId[id]) continue;
    layer[id] = d;
    for (const next of Object.values(byId[id].next || {})) for (const n of next || []) queue.push([n, d + 1]);
  }
  const rows = [];
  for (const [id, d] of Object.entries(layer)) (rows[d] = rows[d] || []).push(id);
  const W = 170, H = 70, pos = {};
  rows.forEach((ids, d) => ids.forEach((id, i) => { pos[id] = [20 + i * W, 20 + d * H]; }));
  const width = 40 + W * Math.max(1, ...rows.map((r) => r.length));
  svg.setAttribute('viewBox', '0 0 ' + width + ' ' + (40 + H * rows.length));
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(40 + H * rows.length));
  const parts = [];
  for (const h of p.hops) {
    if (!pos[h.id]) continue;
    for (const [label, next] of Object.entries(h.next || {})) {
      for (const n of next || []) {
        if (!pos[n]) continue;
        const [x1, y1] = pos[h.id], [x2, y2] = pos[n];
        parts.push(svgEl('line', { x1: x1 + 65, y1: y1 + 34, x2: x2 + 65, y2, class: 'edge' }));
        if (h.type === 'switch') parts.push(svgEl('text', { x: (x1 + x2) / 2 + 70, y: (y1 + y2) / 2 + 22, class: 'edge-label', text: label }));
      }
    }
  }
  for (const h of p.hops) {
    if (!pos[h.id]) continue;
    const [x, y] = pos[h.id];
    const g = svgEl('g', { class: 'hop ' + h.type, 'data-hop': h.id });
    g.append(h.type === 'switch'
      ? svgEl('polygon', { points: [x + 65, y, x + 130, y + 17, x + 65, y + 34, x, y + 17].join(' ') })
      : svgEl('rect', { x, y, width: 130, height: 34, rx: 4 }));
    const label = h.type === 'switch' ? 'if' : (h.plugin || h.to || h.type) + (h.command ? ' ' + h.command : '');
    g.append(svgEl('text', { x: x + 65, y: y + 21, text: label }), svgEl('title', { text: h.step + ': ' + label }));
    parts.push(g);
  }
  svg.replaceChildren(...parts);
}

// ------------------------------------------------------------------ live

// Reads GET /events as a stream and resumes from the last id it saw.
async function connect(delay = 1000) {
  const ctl = new AbortController();
  stream = ctl;
  const headers = { Accept: 'text/event-stream' };
  if (lastEventId) headers['Last-Event-ID'] = lastEventId;
  try {
    const r = await fetch(new URL('events', BASE), { headers, signal: ctl.signal, cache: 'no-store', credentials: 'same-origin' });
    if (!r.ok || !r.body) throw new Error('HTTP ' + r.status);
    $('#live').textContent = 'live';
    delay = 1000;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let at;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        frame(buf.slice(0, at));
        buf = buf.slice(at + 2);
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (stream !== ctl || !csrf) return;
  $('#live').textContent = 'reconnecting';
  setTimeout(() => { if (stream === ctl && csrf) connect(Math.min(delay * 2, 15000)); }, delay);
}

function frame(text) {
  let id = null, kind = 'message', data = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('id:')) id = line.slice(3).trim();
    else if (line.startsWith('event:')) kind = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
  }
  if (!data) return;
  if (id) lastEventId = id;
  let ev = {};
  try { ev = JSON.parse(data); } catch (e) { return; }
  const list = $('#events');
  const what = [kind, ev.plugin, ev.command, ev.job_id ? ev.job_id.slice(-8) : ''].filter(Boolean).join(' ');
  list.prepend(el('li', { 'data-kind': kind, 'data-job-id': ev.job_id || '' }, el('time', { text: (ev.at || '').slice(11, 19) }), ' ' + what));
  while (list.children.length > 50) list.lastChild.remove();
  // One refresh per second at most, however many events arrive: each one
  // re-reads lists from the ledger.
  if (!refreshTimer) {
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      const v = current();
      if (v === 'overview') loadOverview();
      else if (v === 'jobs') loadJobs();
      else if (v === 'schedules') loadSchedules();
    }, 1000);
  }
}

// ------------------------------------------------------------------ wiring

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('#token').value.trim());
  });
  $('#logout').addEventListener('click', signOut);
  for (const b of document.querySelectorAll('#nav [data-view]')) b.addEventListener('click', () => show(b.dataset.view));
  $('#jobs-filter').addEventListener('submit', (e) => { e.preventDefault(); openJob = null; $('#job-detail').hidden = true; loadJobs(); });
  $('#jd-retry').addEventListener('click', retry);
  $('#jd-cancel').addEventListener('click', cancelJob);
  $('#jobs-more').addEventListener('click', () => {
    if (LOG_FILTERS.some((k) => $('#f-' + k).value.trim())) {
      $('#f-limit').value = String(Math.min(200, (Number($('#f-limit').value) || 50) + 50));
      loadJobs();
    } else {
      loadJobs(true);
    }
  });
  $('#pipeline-pick').addEventListener('change', (e) => drawGraph(e.target.value));
  resume();
});
