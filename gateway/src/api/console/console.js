// The operator console: polls the admin API (at most once a second) and renders the fleet, each model's routing and
// versions, the rollout with its analysis, traffic, skew and the journal, and sends the operator's actions after a
// confirmation step.
//
// Served under `default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; ...`, so:
// - no inline script, no eval, no event-handler attributes: listeners are added here;
// - no style attributes: the look is console.css classes, charts are SVG whose geometry is set as attributes;
// - every string from the server goes into the page as text (textContent / text nodes), never as HTML: the DOM is
//   built with createElement/createElementNS. A rollback reason such as `<img src=x onerror=...>` shows as text.
// The token lives in sessionStorage (this tab only) and travels only in the Authorization header.
'use strict';

(() => {
  const TOKEN_KEY = 'gateway-console-token';
  const MODEL_KEY = 'gateway-console-model';
  const POLL_MS = 1000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Journal kinds that end a rollout: its timeline stops at the first of them after the start.
  const ROLLOUT_END_KINDS = new Set(['promoted', 'rolled_back', 'rollout_aborted']);
  // Checks whose threshold is a minimum (the value must stay at or above it); every other check is a maximum.
  const MIN_CHECKS = new Set(['success_rate']);
  const JOURNAL_LIMIT = 300;

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    selected: null, // model name
    models: [], // the last /admin/models answer
    last: {}, // section -> JSON text it was last rendered from, to re-render only what changed
    gen: 0, // bumped on logout and model change: answers of an older generation are dropped
    timer: null,
    busy: false,
    lastStart: 0,
    polls: 0,
  };

  // ---------------------------------------------------------------- DOM helpers (text only, never HTML)

  function add(parent, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) add(parent, c);
      else if (c instanceof Node) parent.appendChild(c);
      else parent.appendChild(document.createTextNode(String(c)));
    }
    return parent;
  }

  // el('td', {class: 'num', dataset: {x: 1}, on: {click: f}}, 'text', child...). Attributes are set with
  // setAttribute (never `style`), children are nodes or strings turned into text nodes.
  function build(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'on') for (const [ev, f] of Object.entries(v)) node.addEventListener(ev, f);
      else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    return add(node, children);
  }
  const el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const sv = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

  // Replaces a container's content, keeping open the <details> (by data-key) that the operator had opened.
  function replace(container, ...children) {
    const open = new Set([...container.querySelectorAll('details[open][data-key]')].map((d) => d.dataset.key));
    container.replaceChildren();
    add(container, children);
    for (const d of container.querySelectorAll('details[data-key]')) if (open.has(d.dataset.key)) d.open = true;
  }

  function badge(text, cls) {
    return el('span', { class: `badge ${cls || String(text)}` }, String(text));
  }

  function kv(pairs) {
    const dl = el('dl', { class: 'kv' });
    for (const [k, v] of pairs) if (v !== undefined) add(dl, [el('dt', {}, k), el('dd', {}, v === null ? '—' : v)]);
    return dl;
  }

  function table(headers, rows, opts = {}) {
    const t = el('table', opts.id ? { id: opts.id } : {});
    add(t, [
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          headers.map((h) => el('th', { class: h.num ? 'num' : null }, h.label || h)),
        ),
      ),
    ]);
    const body = el('tbody');
    for (const r of rows) {
      const tr = el('tr', { class: r.cls || null, dataset: r.data || {} });
      r.cells.forEach((c, i) => add(tr, [el('td', { class: headers[i] && headers[i].num ? 'num' : null }, c)]));
      body.appendChild(tr);
    }
    t.appendChild(body);
    return t;
  }

  // ---------------------------------------------------------------- formatting

  function num(v, digits = 2) {
    if (v === null || v === undefined || Number.isNaN(v)) return '—';
    if (typeof v !== 'number') return String(v);
    if (Math.abs(v) >= 1000) return v.toFixed(0);
    return String(Number(v.toFixed(digits)));
  }
  const percent = (v, digits = 2) => (v === null || v === undefined ? '—' : `${num(v, digits)} %`);
  const share = (v, digits = 2) => (v === null || v === undefined ? '—' : `${num(v * 100, digits)} %`);
  const ms = (v) => (v === null || v === undefined ? '—' : `${num(v, 2)} ms`);

  function clock(t) {
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? '?' : `${d.toISOString().slice(11, 19)}Z`;
  }
  // An RFC 3339 string or milliseconds since the epoch, as `2026-12-02 05:53:25Z`.
  function when(iso) {
    const t = typeof iso === 'number' ? iso : Date.parse(iso);
    return Number.isNaN(t) ? String(iso) : `${new Date(t).toISOString().replace('T', ' ').slice(0, 19)}Z`;
  }
  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '';
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 90) return `${s.toFixed(0)} s ago`;
    if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h ago`;
    return `${(s / 86400).toFixed(1)} d ago`;
  }
  const pretty = (v) => JSON.stringify(v, null, 2);
  const path = (...parts) => parts.map(encodeURIComponent).join('/');

  // ---------------------------------------------------------------- the admin API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // One admin call. The token goes in the Authorization header only; `credentials: 'omit'` sends no cookie.
  // Errors carry the server's {"error": "..."} message. A 401 logs the console out (see refuse()).
  async function api(method, url, body) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const gen = state.gen;
    let res;
    try {
      res = await fetch(url, init);
    } catch (e) {
      throw new ApiError(0, `cannot reach the admin API (${e.message})`);
    }
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (_) {
      json = null;
    }
    const message = json && typeof json.error === 'string' ? json.error : `HTTP ${res.status} ${res.statusText}`;
    if (res.status === 401) {
      if (gen === state.gen) refuse(message);
      throw new ApiError(401, message);
    }
    if (!res.ok) throw new ApiError(res.status, message);
    return json;
  }

  // ---------------------------------------------------------------- token, login, logout

  function showLogin(message) {
    stopPolling();
    state.gen += 1;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearData();
    $('app').classList.add('hidden');
    $('forget').classList.add('hidden');
    $('banner').classList.add('hidden');
    $('login').classList.remove('hidden');
    const refused = $('refused');
    refused.textContent = message || '';
    refused.classList.toggle('hidden', !message);
    $('token-input').focus();
  }

  // A 401: the token is wrong (or the API has none configured). Nothing of the data stays on the page.
  function refuse(message) {
    showLogin(`The admin API refused this token: ${message}. Enter the right token.`);
  }

  // Empties every place that shows server data, so a refused or forgotten token leaves none behind.
  function clearData() {
    for (const id of [
      'fleet-body',
      'models-body',
      'versions-body',
      'rollout-body',
      'traffic-body',
      'skew-body',
      'journal-body',
    ]) {
      $(id).replaceChildren();
    }
    for (const s of document.querySelectorAll('.version-select')) {
      s.replaceChildren();
      delete s.dataset.key;
    }
    for (const id of ['model-name', 'fleet-badge', 'poll-status', 'action-status']) $(id).textContent = '';
    const kind = $('journal-kind');
    while (kind.options.length > 1) kind.remove(1);
    const jm = $('journal-model');
    while (jm.options.length > 2) jm.remove(2);
    state.models = [];
    state.last = {};
  }

  function start(token) {
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('login').classList.add('hidden');
    $('refused').classList.add('hidden');
    $('app').classList.remove('hidden');
    $('forget').classList.remove('hidden');
    state.gen += 1;
    pollSoon();
  }

  // ---------------------------------------------------------------- polling

  function stopPolling() {
    clearTimeout(state.timer);
    state.timer = null;
  }

  // Polls at most once a second: the next poll starts a second after the previous one started, never while one is
  // running, and not at all while the tab is hidden (it resumes when the tab shows again).
  function pollSoon() {
    stopPolling();
    if (!state.token || document.hidden) return;
    if (state.busy) return; // tick() calls pollSoon() when it is done
    const wait = Math.max(0, state.lastStart + POLL_MS - performance.now());
    state.timer = setTimeout(tick, wait);
  }

  async function tick() {
    state.timer = null;
    if (!state.token || document.hidden) return;
    state.busy = true;
    state.lastStart = performance.now();
    try {
      await refresh(state.gen);
    } catch (e) {
      // A rendering bug must not stop the polling; show it where the operator looks.
      showBanner(`console error: ${e.message}`);
    } finally {
      state.busy = false;
    }
    pollSoon();
  }

  function showBanner(text) {
    const b = $('banner');
    b.textContent = text || '';
    b.classList.toggle('hidden', !text);
  }

  // Resolves to {ok, value} or {ok: false, error}, so one failing call does not hide the others' data.
  const settle = (p) =>
    p.then(
      (value) => ({ ok: true, value }),
      (error) => ({ ok: false, error }),
    );

  async function refresh(gen) {
    const m = state.selected;
    const journalModel = $('journal-model').value;
    const calls = {
      cluster: api('GET', '/admin/cluster'),
      models: api('GET', '/admin/models'),
    };
    if (m) {
      const base = `/admin/models/${path(m)}`;
      calls.detail = api('GET', base);
      calls.rollout = api('GET', `${base}/rollout`);
      calls.events = api('GET', `${base}/events`);
      calls.skew = api('GET', `${base}/skew`);
      calls.traffic = api('GET', `${base}/traffic`);
    }
    // The journal of another model, or of every model: one call per model (there is no fleet-wide journal).
    const journalOf =
      journalModel === '*' ? state.models.map((x) => x.name) : journalModel && journalModel !== m ? [journalModel] : [];
    journalOf.forEach((name) => {
      calls[`events:${name}`] = api('GET', `/admin/models/${path(name)}/events`);
    });
    const keys = Object.keys(calls);
    const results = await Promise.all(keys.map((k) => settle(calls[k])));
    if (gen !== state.gen) return; // logged out or another model selected meanwhile
    const r = Object.fromEntries(keys.map((k, i) => [k, results[i]]));
    if (Object.values(r).some((x) => !x.ok && x.error.status === 401)) return; // refuse() has run

    const unreachable = Object.values(r).find((x) => !x.ok && x.error.status === 0);
    showBanner(unreachable ? `${unreachable.error.message}; retrying every second, the data below may be stale` : '');
    state.polls += 1;
    const status = $('poll-status');
    status.textContent = unreachable ? 'connection lost' : `updated ${clock(Date.now())}`;
    status.dataset.polls = String(state.polls);

    if (r.cluster.ok) renderFleet(r.cluster.value);
    if (r.models.ok) {
      state.models = Array.isArray(r.models.value) ? r.models.value : [];
      if (!state.selected || !state.models.some((x) => x.name === state.selected)) {
        const saved = sessionStorage.getItem(MODEL_KEY);
        const pick = state.models.find((x) => x.name === saved) || state.models[0];
        if (pick) {
          select(pick.name);
          return; // select() polls again for the model's own data
        }
      }
      renderModels(state.models);
      syncJournalModels(state.models);
    }
    if (!m) return;
    renderVersions(r.detail, r.skew);
    renderRollout(r.rollout, r.events, r.detail);
    renderTraffic(r.traffic, r.detail);
    renderSkew(r.skew);
    if (journalOf.length) {
      const journal = [];
      let failed = null;
      for (const name of journalOf) {
        const x = r[`events:${name}`];
        if (x.ok && Array.isArray(x.value)) journal.push(...x.value.map((e) => ({ ...e, model: name })));
        else if (!x.ok) failed = x;
      }
      journal.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
      renderJournal(failed && journalOf.length === 1 ? failed : { ok: true, value: journal }, journalModel === '*');
    } else {
      renderJournal(
        r.events.ok ? { ok: true, value: r.events.value.map((e) => ({ ...e, model: m })) } : r.events,
        false,
      );
    }
    if (r.detail.ok) syncActionInputs(r.detail.value);
  }

  // True when `value` differs from what `section` was last rendered from.
  function changed(section, value) {
    const text = JSON.stringify(value);
    if (state.last[section] === text) return false;
    state.last[section] = text;
    return true;
  }

  function select(name) {
    if (state.selected === name) return;
    state.selected = name;
    sessionStorage.setItem(MODEL_KEY, name);
    state.gen += 1;
    for (const k of Object.keys(state.last)) if (k !== 'fleet') delete state.last[k];
    for (const id of ['versions-body', 'rollout-body', 'traffic-body', 'skew-body', 'journal-body']) {
      replace($(id), el('p', { class: 'muted' }, 'loading…'));
    }
    for (const s of document.querySelectorAll('.version-select')) {
      s.replaceChildren();
      delete s.dataset.key;
    }
    $('model-name').textContent = name;
    $('action-status').textContent = '';
    renderModels(state.models);
    pollSoon(); // a poll still running answers for the previous model: its generation is older, so it is dropped
  }

  // ---------------------------------------------------------------- fleet

  function renderFleet(c) {
    if (!changed('fleet', c)) return;
    const body = $('fleet-body');
    const fb = $('fleet-badge');
    if (!c || c.mode === 'single-node' || !Array.isArray(c.replicas)) {
      fb.textContent = 'single node';
      fb.className = 'badge';
      replace(
        body,
        el('p', { id: 'fleet-mode' }, 'Single node: no cluster is configured; this gateway alone serves and analyses.'),
      );
      return;
    }
    fb.textContent = c.connected ? `cluster · ${c.replicas.length} replicas` : 'cluster · store unreachable';
    fb.className = `badge ${c.connected ? 'connected' : 'disconnected'}`;
    const newest = Math.max(0, ...c.replicas.map((x) => Number(x.applied_revision) || 0));
    const rows = c.replicas.map((x) => ({
      data: { replica: x.name },
      cells: [
        [x.name, x.name === c.leader ? ' ★ leader' : '', x.name === c.replica ? ' (this replica)' : ''].join(''),
        x.http_addr || '—',
        x.grpc_addr || '—',
        x.admin_addr || '—',
        [
          String(x.applied_revision),
          newest - x.applied_revision > 0 ? ` (${newest - x.applied_revision} behind)` : '',
        ].join(''),
        `${when(x.last_seen)} (${ago(x.last_seen)})`,
      ],
    }));
    replace(
      body,
      el('p', { id: 'fleet-mode' }, 'Cluster mode: one routing table shared through etcd, one analyser (the leader).'),
      kv([
        ['store', badge(c.connected ? 'connected' : 'unreachable', c.connected ? 'connected' : 'disconnected')],
        ['this replica', String(c.replica)],
        ['applied revision here', String(c.revision)],
        ['analysis leader', c.leader ? String(c.leader) : 'none'],
        ['key prefix', c.prefix === undefined ? undefined : String(c.prefix)],
      ]),
      table(['replica', 'HTTP', 'gRPC', 'admin', 'applied revision', 'last seen'], rows, { id: 'replicas' }),
    );
  }

  // ---------------------------------------------------------------- models

  // The routing of a model as a bar: stable and canary share the live traffic (top row); the shadow is a copy of a
  // share of requests, not a share of the answers, so it is a thinner row of its own below.
  function routingBar(m) {
    const w = m.canary ? Number(m.canary.weight_percent) || 0 : 0;
    const svg = sv('svg', { class: 'bar', viewBox: '0 0 100 22', preserveAspectRatio: 'none', role: 'img' });
    if (m.stable) svg.appendChild(sv('rect', { class: 'seg-stable', x: 0, y: 0, width: 100 - w, height: 14 }));
    else svg.appendChild(sv('rect', { class: 'seg-empty', x: 0, y: 0, width: 100, height: 14 }));
    if (w > 0 || m.canary) svg.appendChild(sv('rect', { class: 'seg-canary', x: 100 - w, y: 0, width: w, height: 14 }));
    svg.appendChild(sv('rect', { class: 'seg-empty', x: 0, y: 17, width: 100, height: 5 }));
    if (m.shadow)
      svg.appendChild(
        sv('rect', { class: 'seg-shadow', x: 0, y: 17, width: Number(m.shadow.percent) || 0, height: 5 }),
      );
    svg.appendChild(sv('title', {}, routingText(m)));
    return svg;
  }

  function routingText(m) {
    const w = m.canary ? Number(m.canary.weight_percent) || 0 : 0;
    const parts = [m.stable ? `stable ${m.stable} · ${num(100 - w)} %` : 'no stable version'];
    if (m.stable_desired) parts.push(`(version ${m.stable_desired} desired)`);
    if (m.canary) parts.push(`canary ${m.canary.version} · ${num(w)} %`);
    if (m.shadow) parts.push(`shadow ${m.shadow.version} · ${num(m.shadow.percent)} % copied`);
    return parts.join('   ');
  }

  function renderModels(models) {
    if (!changed('models', { models, selected: state.selected })) return;
    const cards = models.map((m) => {
      const last = Array.isArray(m.events) && m.events.length ? m.events[m.events.length - 1] : null;
      const versions = (m.versions || []).map((v) =>
        el(
          'span',
          { class: `badge ${v.state}`, dataset: { version: v.version, state: v.state }, title: v.reason || null },
          `v${v.version} ${v.state}${v.role !== 'none' ? ` · ${v.role}` : ''}`,
        ),
      );
      return el(
        'div',
        {
          class: `model-card${m.name === state.selected ? ' selected' : ''}`,
          dataset: { model: m.name },
          tabindex: 0,
          role: 'button',
          on: {
            click: () => select(m.name),
            keydown: (e) => {
              if (e.key === 'Enter' || e.key === ' ') select(m.name);
            },
          },
        },
        el('h3', {}, el('span', { class: 'model-name' }, m.name), m.ready ? badge('ready') : badge('not ready', 'bad')),
        routingBar(m),
        el('div', { class: 'routing-text' }, routingText(m)),
        el('div', { class: 'versions' }, versions),
        last ? el('div', { class: 'muted' }, `last: ${last.kind} at ${when(last.at)}`) : null,
      );
    });
    replace($('models-body'), cards.length ? cards : el('p', { class: 'muted' }, 'No models.'));
  }

  function renderVersions(detail, skew) {
    const body = $('versions-body');
    if (!detail.ok) {
      if (changed('versions', { error: detail.error.message }))
        replace(body, el('p', { class: 'error' }, detail.error.message));
      return;
    }
    const m = detail.value;
    // Age and staleness come from the skew report (ready versions); a version view that carries them wins.
    const skewOf = {};
    if (skew.ok && skew.value && Array.isArray(skew.value.versions))
      for (const s of skew.value.versions) skewOf[s.version] = s;
    const data = { m: { ...m, events: undefined }, s: skewOf };
    if (!changed('versions', data)) return;
    $('model-name').textContent = m.name;
    const w = m.canary ? Number(m.canary.weight_percent) || 0 : 0;
    const rows = (m.versions || []).map((v) => {
      const s = skewOf[v.version] || {};
      const roles = [];
      if (v.role === 'stable') roles.push(badge('stable'), ` ${num(100 - w)} %`);
      if (v.role === 'canary') roles.push(badge('canary'), ` ${num(w)} %`);
      if (m.shadow && m.shadow.version === v.version)
        roles.push(' ', badge('shadow'), ` ${num(m.shadow.percent)} % copied`);
      if (m.stable_desired === v.version) roles.push(' ', badge('desired stable', 'warn'));
      const ageDays = v.age_days !== undefined ? v.age_days : s.age_days;
      const stale = v.stale !== undefined ? v.stale : s.stale;
      const trained = v.trained_at || s.trained_at;
      return {
        cls: v.state === 'failed' ? 'fail' : null,
        data: { version: v.version, state: v.state },
        cells: [
          el('strong', {}, v.version),
          [badge(v.state), v.reason ? el('div', { class: 'error' }, v.reason) : null],
          roles.length ? roles : el('span', { class: 'muted' }, 'no traffic'),
          // The manifest's stage (e.g. "candidate") when the API shows it.
          v.stage ? badge(v.stage, v.stage === 'candidate' ? 'warn' : '') : el('span', { class: 'muted' }, '—'),
          trained ? when(trained) : '—',
          ageDays === undefined || ageDays === null ? '—' : `${num(ageDays, 1)} d`,
          stale === undefined ? '—' : stale ? badge('stale') : badge('fresh', 'ok'),
          v.disk ? badge(`files ${v.disk}`, 'warn') : '',
        ],
      };
    });
    replace(
      body,
      routingBar(m),
      el('p', { class: 'routing-text', id: 'routing-text' }, routingText(m)),
      table(['version', 'state', 'routing', 'stage', 'trained at', 'age', 'staleness', 'files'], rows, {
        id: 'versions-table',
      }),
    );
  }

  // ---------------------------------------------------------------- rollout

  // The journal entries of rollout `r`: from its start to the first entry that ended it.
  function rolloutEvents(r, events) {
    const t0 = Date.parse(r.started_at);
    const out = [];
    for (const e of events) {
      if (Date.parse(e.at) < t0) continue;
      out.push(e);
      if (ROLLOUT_END_KINDS.has(e.kind)) break;
    }
    return out;
  }

  // The canary's weight right after a journal entry of its rollout: 100 once promoted, 0 once it left the routing.
  const weightAfter = (e, r) => {
    if (e.kind === 'promoted') return 100;
    if (e.kind === 'rolled_back' || e.kind === 'rollout_aborted') return 0;
    if (e.data && typeof e.data.weight_after === 'number') return e.data.weight_after;
    return e.canary === r.canary && typeof e.weight_percent === 'number' ? e.weight_percent : 0;
  };

  function renderRollout(rollout, events, detail) {
    const body = $('rollout-body');
    if (!rollout.ok) {
      if (changed('rollout', { error: rollout.error.message }))
        replace(body, el('p', { class: 'error' }, rollout.error.message));
      return;
    }
    const r = rollout.value;
    if (!r) {
      if (changed('rollout', null)) {
        replace(
          body,
          el(
            'p',
            { class: 'muted', id: 'rollout-none' },
            'No rollout has run for this model. Start one from the actions.',
          ),
        );
      }
      return;
    }
    const evs = events.ok && Array.isArray(events.value) ? rolloutEvents(r, events.value) : [];
    const active = ['progressing', 'paused', 'awaiting_approval'].includes(r.phase);
    // An active rollout's timeline runs to "now", so it is redrawn every poll; an ended one only when it changes.
    if (!changed('rollout', { r, evs, now: active ? Date.now() : 0 })) return;

    const steps = Array.isArray(r.steps_percent) ? r.steps_percent : [];
    const end =
      evs.length && ROLLOUT_END_KINDS.has(evs[evs.length - 1].kind) ? Date.parse(evs[evs.length - 1].at) : null;
    const t0 = Date.parse(r.started_at);
    const t1 = Math.max(t0 + 1000, active || end === null ? Date.now() : end);
    const decisions = evs.filter((e) => e.data && e.data.decision && e.data.analysis);
    const failures = decisions.filter((e) => e.data.decision === 'failed' || e.data.decision === 'rollback');
    // The routing's own weight while the canary is in it; an ended rollout says where the canary went.
    let nowWeight;
    if (detail.ok && detail.value.canary && Number(detail.value.canary.version) === r.canary) {
      nowWeight = percent(detail.value.canary.weight_percent);
    } else if (active) {
      nowWeight = percent(r.weight_percent);
    } else {
      nowWeight = r.phase === 'promoted' ? `100 % (version ${r.canary} is stable)` : '0 % (out of the routing)';
    }

    const phase = badge(r.phase, r.phase);
    phase.id = 'rollout-phase';
    phase.dataset.phase = r.phase;
    phase.dataset.started = r.started_at;
    const head = kv([
      ['phase', phase],
      ['versions', `canary ${r.canary} against stable ${r.stable}`],
      [
        'step',
        `${Math.min(r.step + 1, steps.length)} of ${steps.length} (${steps.map((s) => `${num(s)} %`).join(' → ')} → promote)`,
      ],
      ['canary weight now', nowWeight],
      ['failed intervals', `${r.failed_intervals} of ${r.policy ? r.policy.threshold : '?'} (rolls back at the last)`],
      ['analyses', String(r.analyses)],
      [
        'analysis',
        r.policy
          ? `every ${num(r.policy.interval_secs)} s over the last ${num(r.policy.window_secs)} s, at least ${r.policy.min_requests} canary requests per interval`
          : '—',
      ],
      [
        'mirroring',
        r.mirroring ? `${num(r.policy.mirror_percent)} % of stable's requests copied to the canary` : 'off',
      ],
      ['started', `${when(r.started_at)} (${ago(r.started_at)})`],
      ['last change', `${when(r.updated_at)} (${ago(r.updated_at)})`],
    ]);

    const msgBox = el('p', { id: 'rollout-message', class: r.phase === 'rolled_back' ? 'fail-why' : '' }, r.message);

    replace(
      body,
      head,
      msgBox,
      whyHolding(r, evs),
      el('h3', {}, 'Steps: canary weight over time'),
      timeline(r, evs, steps, t0, t1),
      el('h3', {}, 'Checks per interval against their thresholds'),
      checkCharts(r, decisions, t0, t1),
      el('h3', {}, `Failed intervals (${failures.length})`),
      failures.length
        ? el(
            'ul',
            { id: 'rollout-failures' },
            failures.map((e) =>
              el(
                'li',
                { dataset: { at: e.at } },
                `${when(e.at)}: ${e.data.decision === 'rollback' ? 'rolled back' : 'failed'} (${e.data.failed_intervals} of ${e.data.threshold}) at ${num(e.data.weight_before)} %: ${e.data.analysis.reason}`,
              ),
            ),
          )
        : el('p', { class: 'muted', id: 'rollout-failures' }, 'None.'),
      el('h3', {}, 'Last analysis'),
      analysisTable(r.last_analysis, 'rollout-analysis'),
      el('details', { 'data-key': 'policy' }, el('summary', {}, 'Policy'), el('pre', {}, pretty(r.policy))),
    );
  }

  // Why the rollout is not moving, when it is not: paused, waiting for approval, or holding (too little traffic,
  // a check without data, cluster evidence missing); consecutive holds are one journal entry with a count.
  function whyHolding(r, evs) {
    let text = null;
    if (r.phase === 'paused')
      text = 'Paused by an operator: the analysis is stopped and the weight stays until resume.';
    else if (r.phase === 'awaiting_approval')
      text =
        'Every step passed: waiting for an operator to approve the promotion (the analysis goes on meanwhile, and a failure still rolls back).';
    else if (r.phase === 'progressing') {
      const lastDecision = [...evs].reverse().find((e) => e.data && e.data.decision);
      if (lastDecision && lastDecision.data.decision === 'hold') {
        const holds = lastDecision.data.holds || 1;
        const since = lastDecision.data.first_hold_at ? ` since ${when(lastDecision.data.first_hold_at)}` : '';
        text = `Holding at ${num(lastDecision.data.weight_before)} %: ${lastDecision.data.analysis ? lastDecision.data.analysis.reason : lastDecision.message}${holds > 1 ? ` (${holds} analyses in a row${since})` : ''}`;
      } else if (r.analyses === 0) {
        text = `Waiting for the first analysis (every ${num(r.policy.interval_secs)} s).`;
      }
    }
    return text ? el('p', { class: 'hold-why', id: 'rollout-hold' }, text) : null;
  }

  function analysisTable(a, id) {
    if (!a) return el('p', { class: 'muted', id }, 'No analysis yet.');
    const rows = (a.checks || []).map((c) => ({
      cls: c.status === 'fail' ? 'fail' : null,
      data: { check: c.check, status: c.status },
      cells: [
        c.check,
        badge(c.status),
        num(c.value, 3),
        `${MIN_CHECKS.has(c.check) ? '≥' : '≤'} ${num(c.threshold, 3)}`,
        c.detail,
      ],
    }));
    return el(
      'div',
      { id },
      kv([
        ['outcome', badge(a.outcome, a.outcome)],
        ['reason', a.reason],
        [
          'canary requests',
          `${a.interval_requests} in the last interval, ${a.window_requests} in the window (stable ${a.stable_window_requests})`,
        ],
      ]),
      table(['check', 'status', { label: 'value', num: true }, 'threshold', 'detail'], rows),
    );
  }

  // ---------------------------------------------------------------- charts (hand-written SVG)

  // A round tick step (1, 2, 2.5 or 5 times a power of ten) near `raw`.
  function niceStep(raw) {
    const p = 10 ** Math.floor(Math.log10(raw > 0 ? raw : 1));
    return p * ([1, 2, 2.5, 5, 10].find((k) => k * p >= raw) || 10);
  }

  // A chart frame: maps time to x and a value range to y (widened to round ticks), draws the axes and returns the
  // parts to draw into.
  function frame({ w = 640, h = 150, t0, t1, lo: lo0, hi: hi0, yFmt = num, cls = '' }) {
    const m = { l: 44, r: 44, t: 8, b: 20 };
    const svg = sv('svg', { class: `chart ${cls}`, viewBox: `0 0 ${w} ${h}`, role: 'img' });
    const step = niceStep((hi0 - lo0 || 1) / 4);
    const lo = Math.floor(lo0 / step + 1e-9) * step;
    const hi = Math.max(lo + step, Math.ceil(hi0 / step - 1e-9) * step);
    const ticks = Math.round((hi - lo) / step);
    const span = hi - lo;
    const x = (t) => m.l + ((t - t0) / (t1 - t0 || 1)) * (w - m.l - m.r);
    const y = (v) => m.t + (1 - (Math.min(hi, Math.max(lo, v)) - lo) / span) * (h - m.t - m.b);
    for (let i = 0; i <= ticks; i += 1) {
      const v = lo + (span * i) / ticks;
      svg.appendChild(sv('line', { class: 'grid', x1: m.l, x2: w - m.r, y1: y(v), y2: y(v) }));
      svg.appendChild(sv('text', { x: m.l - 4, y: y(v) + 3, 'text-anchor': 'end' }, yFmt(v)));
    }
    svg.appendChild(sv('line', { class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: h - m.b }));
    svg.appendChild(sv('line', { class: 'axis', x1: m.l, x2: w - m.r, y1: h - m.b, y2: h - m.b }));
    svg.appendChild(sv('text', { x: m.l, y: h - 5 }, clock(t0)));
    svg.appendChild(
      sv('text', { x: w - m.r, y: h - 5, 'text-anchor': 'end' }, `${clock(t1)} (+${num((t1 - t0) / 1000, 0)} s)`),
    );
    return { svg, x, y, m, w, h };
  }

  // The step timeline: the canary's weight after each journal entry of the rollout, the planned steps as guides,
  // and a marker per decision (advance, hold, failed interval, rollback, promotion) or operator command.
  function timeline(r, evs, steps, t0, t1) {
    const f = frame({ w: 900, h: 190, t0, t1, lo: 0, hi: 100, yFmt: (v) => `${num(v, 0)} %`, cls: 'timeline' });
    const { svg, x, y } = f;
    svg.id = 'rollout-timeline';
    for (const s of steps) {
      svg.appendChild(sv('line', { class: 'guide', x1: f.m.l, x2: f.w - f.m.r, y1: y(s), y2: y(s) }));
      svg.appendChild(sv('text', { x: f.w - f.m.r + 3, y: y(s) + 3 }, `${num(s)} %`));
    }
    let w = evs.length ? weightAfter(evs[0], r) : steps[0] || 0;
    let d = `M ${x(t0)} ${y(w)}`;
    for (const e of evs.slice(1)) {
      w = weightAfter(e, r);
      const xe = x(Date.parse(e.at));
      d += ` H ${xe} V ${y(w)}`;
    }
    d += ` H ${x(t1)}`;
    svg.appendChild(sv('path', { class: 'weight-line', d }));
    svg.dataset.weight = String(w);
    svg.dataset.points = String(evs.length);
    for (const e of evs) {
      const kind = e.data && e.data.decision ? e.data.decision : e.kind === 'rollout_started' ? 'advance' : 'command';
      const dot = sv('circle', {
        class: kind,
        cx: x(Date.parse(e.at)),
        cy: y(weightAfter(e, r)),
        r: 4.5,
        dataset: { kind: e.kind },
      });
      dot.appendChild(sv('title', {}, `${when(e.at)} ${e.kind}: ${e.message}`));
      svg.appendChild(dot);
    }
    return svg;
  }

  // One small chart per check: its value at each analysis, the threshold as a dashed line over a shaded failing
  // side, and a dot per interval coloured by its status. Holds that the journal merged are one dot.
  function checkCharts(r, decisions, t0, t1) {
    const byCheck = new Map();
    for (const e of decisions) {
      for (const c of e.data.analysis.checks || []) {
        if (!byCheck.has(c.check)) byCheck.set(c.check, []);
        byCheck.get(c.check).push({ t: Date.parse(e.at), ...c });
      }
    }
    if (!byCheck.size) return el('p', { class: 'muted', id: 'check-charts' }, 'No analysis has been journaled yet.');
    const charts = [];
    for (const [check, pts] of byCheck) {
      const threshold = pts[pts.length - 1].threshold;
      const min = MIN_CHECKS.has(check);
      const values = pts.map((p) => p.value).filter((v) => typeof v === 'number');
      let lo = Math.min(0, threshold, ...values);
      let hi = Math.max(threshold, ...values) * 1.1 || 1;
      if (min) {
        // A success rate lives near 100 %: zoom on the band from the lowest value or threshold to 100.
        lo = Math.max(0, Math.min(threshold, ...values) - 1);
        hi = Math.max(100, ...values);
      }
      const f = frame({ w: 320, h: 130, t0, t1, lo, hi, cls: 'check-chart' });
      const { svg, x, y } = f;
      svg.dataset.check = check;
      svg.dataset.threshold = String(threshold);
      const top = f.m.t;
      const bottom = f.h - f.m.b;
      const zone = min ? { y: y(threshold), height: bottom - y(threshold) } : { y: top, height: y(threshold) - top };
      svg.appendChild(sv('rect', { class: 'fail-zone', x: f.m.l, width: f.w - f.m.l - f.m.r, ...zone }));
      svg.appendChild(
        sv('line', { class: 'threshold', x1: f.m.l, x2: f.w - f.m.r, y1: y(threshold), y2: y(threshold) }),
      );
      svg.appendChild(sv('text', { class: 'bad', x: f.w - f.m.r + 3, y: y(threshold) + 3 }, num(threshold)));
      let d = '';
      for (const p of pts) if (typeof p.value === 'number') d += `${d ? ' L' : 'M'} ${x(p.t)} ${y(p.value)}`;
      if (d) svg.appendChild(sv('path', { class: 'value-line', d }));
      for (const p of pts) {
        const hasValue = typeof p.value === 'number';
        const dot = sv('circle', {
          class: p.status,
          cx: x(p.t),
          cy: hasValue ? y(p.value) : bottom,
          r: 4,
          dataset: { value: hasValue ? p.value : '', threshold: p.threshold, status: p.status },
        });
        dot.appendChild(
          sv(
            'title',
            {},
            `${when(p.t)}: ${p.status}, ${hasValue ? num(p.value, 3) : 'no data'} (threshold ${num(p.threshold, 3)}): ${p.detail}`,
          ),
        );
        svg.appendChild(dot);
      }
      const last = pts[pts.length - 1];
      charts.push(
        el(
          'div',
          { class: 'check', dataset: { check } },
          el(
            'p',
            { class: 'chart-title' },
            `${check} ${min ? '≥' : '≤'} ${num(threshold)} · last ${num(last.value, 3)} (${last.status})`,
          ),
          svg,
        ),
      );
    }
    return el('div', { class: 'charts', id: 'check-charts' }, charts);
  }

  // A line chart of one measure per version over time; null values (no requests in a step) break the line.
  function seriesChart(title, points, versions, pick, yFmt, id) {
    const t0 = Date.parse(points[0].at);
    const t1 = Math.max(t0 + 1000, Date.parse(points[points.length - 1].at));
    const values = [];
    for (const p of points)
      for (const v of versions) {
        const x = p.versions[v] ? pick(p.versions[v]) : null;
        if (typeof x === 'number') values.push(x);
      }
    const hi = Math.max(...values, 0) || 1;
    const f = frame({ w: 400, h: 140, t0, t1, lo: 0, hi, yFmt, cls: 'traffic-chart' });
    f.svg.dataset.measure = id;
    for (const v of versions) {
      let d = '';
      const vals = points.map((p) => (p.versions[v] ? pick(p.versions[v]) : null));
      vals.forEach((val, i) => {
        if (typeof val !== 'number') return;
        const [px, py] = [f.x(Date.parse(points[i].at)), f.y(val)];
        const before = typeof vals[i - 1] === 'number';
        d += ` ${before ? 'L' : 'M'} ${px} ${py}`;
        // A value between two gaps is no line at all: show it as a dot.
        if (!before && typeof vals[i + 1] !== 'number')
          f.svg.appendChild(sv('circle', { class: seriesClass(v), cx: px, cy: py, r: 2.5 }));
      });
      if (d) f.svg.appendChild(sv('path', { class: `series ${seriesClass(v)}`, d: d.trim(), dataset: { version: v } }));
    }
    return el('div', {}, el('p', { class: 'chart-title' }, title), f.svg);
  }

  const seriesClass = (v) => `series-${(Math.max(1, parseInt(v, 10) || 1) - 1) % 6}`;

  // ---------------------------------------------------------------- traffic

  function renderTraffic(traffic, detail) {
    const body = $('traffic-body');
    if (!traffic.ok) {
      // The endpoint may not exist on an older gateway: say so instead of failing.
      const msg =
        traffic.error.status === 404 ? 'No traffic history (this gateway does not provide it).' : traffic.error.message;
      if (changed('traffic', { error: msg }))
        replace(body, el('p', { class: traffic.error.status === 404 ? 'muted' : 'error', id: 'traffic-none' }, msg));
      return;
    }
    const t = traffic.value || {};
    const points = Array.isArray(t.points)
      ? t.points.filter((p) => p && p.versions && !Number.isNaN(Date.parse(p.at)))
      : [];
    if (!changed('traffic', { points, roles: detail.ok ? detail.value.versions : null })) return;
    if (!points.length) {
      replace(body, el('p', { class: 'muted', id: 'traffic-none' }, 'No traffic history yet.'));
      return;
    }
    const versions = [...new Set(points.flatMap((p) => Object.keys(p.versions)))].sort((a, b) => a - b);
    const roleOf = {};
    if (detail.ok) for (const v of detail.value.versions || []) roleOf[v.version] = v.role;
    const legend = el(
      'div',
      { class: 'legend' },
      versions.map((v) =>
        el(
          'span',
          {},
          sv('svg', { viewBox: '0 0 10 10' }, sv('rect', { class: seriesClass(v), x: 0, y: 0, width: 10, height: 10 })),
          `version ${v}${roleOf[v] && roleOf[v] !== 'none' ? ` (${roleOf[v]})` : ''}`,
        ),
      ),
    );
    const last = points[points.length - 1];
    const rows = versions.map((v) => {
      const p = last.versions[v] || {};
      return { data: { version: v }, cells: [v, num(p.rps, 1), share(p.error_rate, 2), ms(p.p50_ms), ms(p.p99_ms)] };
    });
    const step = t.step_secs ? `${num(t.step_secs)} s steps` : 'steps';
    replace(
      body,
      el(
        'p',
        { class: 'muted' },
        `Last ${num((Date.parse(last.at) - Date.parse(points[0].at)) / 60000, 1)} min in ${step}; latest at ${when(last.at)}.`,
      ),
      legend,
      el(
        'div',
        { class: 'charts two', id: 'traffic-charts' },
        seriesChart(
          'requests/s',
          points,
          versions,
          (p) => p.rps,
          (v) => num(v, 1),
          'rps',
        ),
        seriesChart(
          'server error rate',
          points,
          versions,
          (p) => (typeof p.error_rate === 'number' ? p.error_rate * 100 : null),
          (v) => `${num(v, 1)} %`,
          'error_rate',
        ),
        seriesChart(
          'p50 latency',
          points,
          versions,
          (p) => p.p50_ms,
          (v) => `${num(v, 1)} ms`,
          'p50',
        ),
        seriesChart(
          'p99 latency',
          points,
          versions,
          (p) => p.p99_ms,
          (v) => `${num(v, 1)} ms`,
          'p99',
        ),
      ),
      table(
        [
          'version',
          { label: 'req/s', num: true },
          { label: 'errors', num: true },
          { label: 'p50', num: true },
          { label: 'p99', num: true },
        ],
        rows,
        { id: 'traffic-latest' },
      ),
    );
  }

  // ---------------------------------------------------------------- skew

  const TOP_FEATURES = 12;
  const psiClass = (p) =>
    typeof p !== 'number' ? 'psi-none' : p < 0.1 ? 'psi-ok' : p <= 0.25 ? 'psi-warn' : 'psi-bad';

  // Features ranked by PSI as horizontal bars, with the 0.1 and 0.25 marks; the right column says the share of
  // values out of the training range (numeric) or of categories never seen in training (categorical).
  function psiBars(ranked) {
    const rowH = 18;
    const w = 900;
    const labelW = 240;
    const barW = 420;
    const h = ranked.length * rowH + 18;
    // The scale stops at 1: anything above is a major shift whatever its size (the number says how much), and
    // the 0.1 and 0.25 marks stay readable.
    const top = Math.min(1, Math.max(0.3, ...ranked.map((f) => f.psi || 0)));
    const x = (p) => labelW + (Math.min(p, top) / top) * barW;
    const svg = sv('svg', { class: 'chart psi-bars', viewBox: `0 0 ${w} ${h}`, role: 'img' });
    ranked.forEach((f, i) => {
      const y = i * rowH;
      const g = sv('g', { dataset: { feature: f.name, psi: f.psi ?? '' } });
      g.appendChild(sv('text', { x: labelW - 6, y: y + 11, 'text-anchor': 'end', class: 'label-strong' }, f.name));
      g.appendChild(
        sv('rect', {
          class: psiClass(f.psi),
          x: labelW,
          y: y + 2,
          width: Math.max(1, x(f.psi || 0) - labelW),
          height: rowH - 4,
        }),
      );
      const unseen = typeof f.unseen_share === 'number';
      const right = `${f.psi === null || f.psi === undefined ? 'no PSI yet' : `PSI ${num(f.psi, 3)}`} · ${unseen ? `unseen ${share(f.unseen_share, 1)}` : `out of range ${share(f.out_of_range_share, 1)}`}`;
      g.appendChild(
        sv('text', { x: labelW + barW + 8, y: y + 11, class: unseen && f.unseen_share > 0 ? 'bad' : null }, right),
      );
      g.appendChild(sv('title', {}, `${f.name}: ${right} over ${f.rows} rows`));
      svg.appendChild(g);
    });
    for (const mark of [0.1, 0.25]) {
      if (mark > top) continue;
      svg.appendChild(sv('line', { class: 'guide', x1: x(mark), x2: x(mark), y1: 0, y2: h - 14 }));
      svg.appendChild(sv('text', { x: x(mark), y: h - 3, 'text-anchor': 'middle' }, String(mark)));
    }
    return svg;
  }

  function renderSkew(skew) {
    const body = $('skew-body');
    if (!skew.ok) {
      if (changed('skew', { error: skew.error.message }))
        replace(body, el('p', { class: 'error' }, skew.error.message));
      return;
    }
    const s = skew.value || {};
    if (!changed('skew', s)) return;
    const parts = [];
    for (const v of s.versions || []) {
      const d = v.drift;
      const head = el(
        'h3',
        {},
        `Version ${v.version} `,
        v.role !== 'none' ? badge(v.role) : null,
        ' ',
        v.stale ? badge('stale') : badge('fresh', 'ok'),
      );
      const facts = kv([
        ['trained at', `${when(v.trained_at)} (${num(v.age_days, 1)} days old)`],
        ['invalid values policy', v.invalid_policy ? String(v.invalid_policy) : 'skew checks off'],
        ['rows in the window', d ? String(d.rows) : '—'],
        [
          'highest PSI',
          d && typeof d.max_psi === 'number'
            ? `${num(d.max_psi, 3)} (${d.max_psi_feature})`
            : 'not enough rows yet (needs 100)',
        ],
      ]);
      const section = el('div', { class: 'skew-version', dataset: { version: v.version } }, head, facts);
      if (d && Array.isArray(d.features) && d.features.length) {
        const categorical = d.features.filter((f) => typeof f.unseen_share === 'number');
        const ranked = [...d.features].sort((a, b) => (b.psi ?? -1) - (a.psi ?? -1));
        if (d.rows > 0) {
          add(section, [
            el(
              'p',
              { class: 'chart-title' },
              `Features by PSI${ranked.length > TOP_FEATURES ? `, top ${TOP_FEATURES} of ${ranked.length}` : ''} (below 0.1 stable, above 0.25 a major shift)`,
            ),
            psiBars(ranked.slice(0, TOP_FEATURES)),
          ]);
        } else {
          add(section, [el('p', { class: 'muted' }, 'No rows in the drift window: no PSI yet.')]);
        }
        add(section, [
          el(
            'details',
            { 'data-key': `features-${v.version}` },
            el('summary', {}, `All ${ranked.length} features`),
            table(
              [
                'feature',
                { label: 'rows', num: true },
                { label: 'PSI', num: true },
                { label: 'out of range', num: true },
                { label: 'unseen categories', num: true },
              ],
              ranked.map((f) => ({
                data: { feature: f.name },
                cells: [
                  f.name,
                  String(f.rows),
                  num(f.psi, 3),
                  share(f.out_of_range_share, 2),
                  typeof f.unseen_share === 'number' ? share(f.unseen_share, 2) : '—',
                ],
              })),
            ),
          ),
        ]);
        if (categorical.length) {
          add(section, [
            el('p', { class: 'chart-title' }, 'Categorical drift'),
            table(
              [
                'feature',
                { label: 'PSI', num: true },
                { label: 'unseen categories', num: true },
                { label: 'rows', num: true },
              ],
              categorical.map((f) => ({
                data: { feature: f.name },
                cls: f.unseen_share > 0 ? 'fail' : null,
                cells: [f.name, num(f.psi, 3), share(f.unseen_share, 2), String(f.rows)],
              })),
              { id: `categorical-${v.version}` },
            ),
          ]);
        }
      }
      const inv = v.invalid_values || [];
      add(section, [
        el('p', { class: 'chart-title' }, 'Invalid input values since load (NaN, ±Inf, outside declared bounds)'),
        inv.length
          ? table(
              [
                'feature',
                { label: 'NaN', num: true },
                { label: 'Inf', num: true },
                { label: 'out of bounds', num: true },
              ],
              inv.map((i) => ({
                cls: 'fail',
                cells: [i.feature, String(i.nan), String(i.inf), String(i.out_of_bounds)],
              })),
            )
          : el('p', { class: 'muted' }, 'None.'),
      ]);
      parts.push(section);
    }
    if (!parts.length) parts.push(el('p', { class: 'muted' }, 'No ready version.'));
    const div = s.divergence || [];
    parts.push(el('h3', {}, 'Divergence on mirrored pairs'));
    parts.push(
      div.length
        ? table(
            [
              'live → shadow',
              { label: 'pairs', num: true },
              { label: 'labels differ', num: true },
              { label: 'mean abs diff', num: true },
              { label: 'mean rel diff', num: true },
              { label: 'max abs diff', num: true },
            ],
            div.map((x) => ({
              cells: [
                `${x.version} → ${x.shadow_version}`,
                String(x.pairs),
                share(x.label_disagreement_rate, 1),
                num(x.mean_abs_diff, 4),
                num(x.mean_rel_diff, 4),
                num(x.max_abs_diff, 4),
              ],
            })),
            { id: 'divergence' },
          )
        : el('p', { class: 'muted' }, 'No mirrored pairs.'),
    );
    const q = s.quality || [];
    parts.push(el('h3', {}, 'Delayed-label quality'));
    parts.push(
      q.length
        ? table(
            [
              'version',
              { label: 'labels', num: true },
              { label: 'accuracy', num: true },
              { label: 'mean abs error', num: true },
            ],
            q.map((x) => ({ cells: [x.version, String(x.feedback), share(x.accuracy, 1), num(x.mean_abs_error, 4)] })),
            { id: 'quality' },
          )
        : el('p', { class: 'muted' }, 'No delayed labels yet.'),
    );
    replace(body, parts);
  }

  // ---------------------------------------------------------------- journal

  function syncJournalModels(models) {
    const sel = $('journal-model');
    const have = new Set([...sel.options].slice(2).map((o) => o.value));
    for (const m of models) if (!have.has(m.name)) sel.appendChild(el('option', { value: m.name }, m.name));
  }

  function syncKinds(events) {
    const sel = $('journal-kind');
    const have = new Set([...sel.options].map((o) => o.value));
    for (const k of [...new Set(events.map((e) => e.kind))].sort())
      if (!have.has(k)) sel.appendChild(el('option', { value: k }, k));
  }

  // What a decision measured, as a table: scalars as key/value rows, the analysis as its checks, the rest as JSON.
  function eventData(data) {
    const parts = [];
    const scalars = Object.entries(data).filter(([, v]) => v === null || typeof v !== 'object');
    if (scalars.length)
      parts.push(
        table(
          ['field', 'value'],
          scalars.map(([k, v]) => ({ cells: [k, v === null ? 'null' : String(v)] })),
        ),
      );
    if (data.analysis && typeof data.analysis === 'object') parts.push(analysisTable(data.analysis, null));
    for (const [k, v] of Object.entries(data)) {
      if (v !== null && typeof v === 'object' && k !== 'analysis')
        parts.push(el('p', { class: 'chart-title' }, k), el('pre', {}, pretty(v)));
    }
    parts.push(el('details', {}, el('summary', {}, 'raw JSON'), el('pre', {}, pretty(data))));
    return el('div', { class: 'event-data' }, parts);
  }

  function renderJournal(events, allModels) {
    const body = $('journal-body');
    if (!events.ok) {
      if (changed('journal', { error: events.error.message }))
        replace(body, el('p', { class: 'error' }, events.error.message));
      return;
    }
    const list = Array.isArray(events.value) ? events.value : [];
    syncKinds(list);
    const kind = $('journal-kind').value;
    const decisionsOnly = $('journal-decisions').checked;
    const shown = list
      .filter((e) => (!kind || e.kind === kind) && (!decisionsOnly || (e.data && e.data.decision)))
      .slice(-JOURNAL_LIMIT)
      .reverse(); // newest first
    if (!changed('journal', { shown, allModels })) return;
    const items = shown.map((e) => {
      const line = [
        el('span', { class: 'journal-time' }, when(e.at)),
        allModels ? el('span', { class: 'journal-model' }, e.model) : null,
        badge(e.kind, e.kind),
        el('span', { class: 'journal-msg' }, e.message),
      ];
      const key = `${e.model}|${e.at}|${e.kind}`;
      const content =
        e.data !== undefined && e.data !== null
          ? el('details', { 'data-key': key }, el('summary', {}, line), eventData(e.data))
          : el('div', { class: 'plain' }, line);
      return el('li', { dataset: { kind: e.kind, model: e.model } }, content);
    });
    replace(
      body,
      items.length
        ? el('ul', { class: 'journal-list', id: 'journal-list' }, items)
        : el('p', { class: 'muted', id: 'journal-list' }, 'No entries match.'),
    );
  }

  // ---------------------------------------------------------------- actions

  // Keeps the version pickers in step with the model's versions without losing the operator's choice.
  function syncActionInputs(m) {
    const versions = (m.versions || []).map((v) => v.version);
    const key = JSON.stringify((m.versions || []).map((v) => [v.version, v.state, v.role]));
    for (const s of document.querySelectorAll('.version-select')) {
      if (s.dataset.key === key) continue;
      const before = s.value;
      s.replaceChildren(
        ...(m.versions || []).map((v) =>
          el('option', { value: v.version }, `${v.version} (${v.state}${v.role !== 'none' ? `, ${v.role}` : ''})`),
        ),
      );
      if (versions.includes(before)) s.value = before;
      else {
        // By default, offer a ready version that is not stable: the usual next canary or shadow.
        const pick = (m.versions || []).find((v) => v.state === 'ready' && v.role !== 'stable');
        if (pick) s.value = pick.version;
      }
      s.dataset.key = key;
    }
  }

  // The confirmation step: a modal dialog stating the exact request, built with textContent.
  function confirmDialog(title, text, request) {
    const dlg = $('confirm-dialog');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-request').textContent = request;
    return new Promise((resolve) => {
      const done = (ok) => {
        $('confirm-ok').removeEventListener('click', onOk);
        $('confirm-cancel').removeEventListener('click', onCancel);
        dlg.removeEventListener('cancel', onCancel);
        if (dlg.open) dlg.close();
        resolve(ok);
      };
      const onOk = () => done(true);
      const onCancel = (e) => {
        if (e) e.preventDefault();
        done(false);
      };
      $('confirm-ok').addEventListener('click', onOk);
      $('confirm-cancel').addEventListener('click', onCancel);
      dlg.addEventListener('cancel', onCancel); // Escape
      dlg.showModal();
      $('confirm-cancel').focus();
    });
  }

  function status(text, ok) {
    const s = $('action-status');
    s.textContent = text;
    s.className = `action-status ${ok ? 'ok' : 'error'}`;
  }

  // Asks for confirmation, then makes the same admin call the CLI makes; a refusal shows the server's message.
  async function act(title, text, method, suffix, body) {
    const m = state.selected;
    if (!m) return;
    const url = `/admin/models/${path(m)}${suffix}`;
    const request = `${method} ${url}${body === undefined ? '' : `\n${pretty(body)}`}`;
    if (!(await confirmDialog(title, text, request))) {
      status(`${title}: cancelled.`, true);
      return;
    }
    const gen = state.gen;
    try {
      await api(method, url, body);
      if (gen === state.gen) status(`${title}: done.`, true);
    } catch (e) {
      if (e.status === 401) return; // logged out by api()
      if (gen === state.gen) status(`${title} refused${e.status ? ` (${e.status})` : ''}: ${e.message}`, false);
    }
    pollSoon();
  }

  const val = (id) => $(id).value.trim();
  const note = (id) => (val(id) ? { reason: val(id) } : undefined);

  function numberInput(id, what) {
    const n = Number($(id).value);
    if ($(id).value.trim() === '' || !Number.isFinite(n)) {
      status(`${what} must be a number.`, false);
      return null;
    }
    return n;
  }

  function bindActions() {
    const m = () => state.selected;
    $('act-rollout-start').addEventListener('click', () => {
      const version = val('rollout-version');
      const body = { version };
      const text = val('rollout-policy');
      if (text) {
        let policy;
        try {
          policy = JSON.parse(text); // JSON.parse, never eval
        } catch (e) {
          status(`The policy is not valid JSON: ${e.message}`, false);
          return;
        }
        if (!policy || typeof policy !== 'object' || Array.isArray(policy)) {
          status('The policy must be a JSON object of the fields to change.', false);
          return;
        }
        body.policy = policy;
      }
      act(
        'Start rollout',
        `Start an automatic rollout of ${m()} version ${version}${body.policy ? ' with the policy changes below' : ' with the configured policy'}.`,
        'POST',
        '/rollout',
        body,
      );
    });
    const commands = {
      pause: 'Pause the rollout: the analysis stops and the weight stays until resume.',
      resume: 'Resume the rollout: the analysis starts again from a fresh window.',
      skip: 'Skip to the next step now, without waiting for the analysis (past the last step this promotes).',
      approve: 'Approve the promotion of the canary waiting for approval.',
      abort: 'Abort the rollout: the canary leaves the routing and stable keeps all traffic.',
    };
    for (const [cmd, text] of Object.entries(commands)) {
      $(`act-rollout-${cmd}`).addEventListener('click', () => {
        act(
          `${cmd[0].toUpperCase()}${cmd.slice(1)} rollout`,
          `${m()}: ${text}`,
          'POST',
          `/rollout/${cmd}`,
          note('rollout-note'),
        );
      });
    }
    $('act-canary').addEventListener('click', () => {
      const weight = numberInput('canary-weight', 'The weight');
      if (weight === null) return;
      const version = val('canary-version');
      act(
        'Set canary',
        `Make version ${version} of ${m()} the canary at ${weight} % of the traffic.`,
        'POST',
        '/canary',
        { version, weight },
      );
    });
    $('act-weight').addEventListener('click', () => {
      const weight = numberInput('canary-weight', 'The weight');
      if (weight === null) return;
      act('Change canary weight', `Send ${weight} % of ${m()}'s traffic to the canary.`, 'PUT', '/canary/weight', {
        weight,
      });
    });
    $('act-promote').addEventListener('click', () => {
      act(
        'Promote',
        `Make ${m()}'s canary the stable version (ends any rollout).`,
        'POST',
        '/promote',
        note('promote-note'),
      );
    });
    $('act-rollback').addEventListener('click', () => {
      const reason = val('rollback-reason');
      act(
        'Roll back',
        `Remove ${m()}'s canary from the routing; stable keeps all traffic (ends any rollout). Reason: ${reason || '(none given)'}`,
        'POST',
        '/rollback',
        { reason },
      );
    });
    $('act-shadow').addEventListener('click', () => {
      const percent = numberInput('shadow-percent', 'The percent');
      if (percent === null) return;
      const version = val('shadow-version');
      act(
        'Set shadow',
        `Copy ${percent} % of ${m()}'s requests to version ${version} (answers are compared, never returned).`,
        'POST',
        '/shadow',
        { version, percent },
      );
    });
    $('act-unshadow').addEventListener('click', () => {
      act('Clear shadow', `Stop copying ${m()}'s requests to a shadow version.`, 'DELETE', '/shadow', undefined);
    });
  }

  // ---------------------------------------------------------------- start

  function init() {
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault(); // form-action 'none': the form never submits, it only hands the token to the script
      const token = $('token-input').value.trim();
      $('token-input').value = '';
      if (token) start(token);
    });
    $('forget').addEventListener('click', () => showLogin(''));
    for (const id of ['journal-model', 'journal-kind', 'journal-decisions']) {
      $(id).addEventListener('change', () => {
        delete state.last.journal;
        pollSoon();
      });
    }
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) {
        stopPolling();
        $('poll-status').textContent = 'paused while the tab is hidden';
      } else {
        pollSoon();
      }
    });
    bindActions();
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) start(saved);
    else showLogin('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
