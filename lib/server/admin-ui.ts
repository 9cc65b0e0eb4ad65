/**
 * The live admin page, `GET /admin/ui`: one self-contained HTML document (inline style and script,
 * no external resource, nothing for the user to build) that polls /admin/upstreams,
 * /admin/decisions and /admin/policy once a second and draws upstreams and their endpoints,
 * breakers, bulkheads and adaptive limits, rate-limit buckets, recent decisions and the policy.
 * It reads only what those JSON views hold, so it adds no state to the proxy; it draws every value
 * with `textContent` (never markup from data), tolerates missing or unknown fields, and a view this
 * sidecar lacks shows as "not available". The admin listener answers it only to `adminFrom`.
 */
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';

const STYLE = `
:root { color-scheme: light; --bg: #f5f6f8; --card: #fff; --line: #e2e5ea; --ink: #1d2330; --dim: #677086;
  --ok: #1c7c3a; --ok-bg: #e3f4e8; --bad: #b42318; --bad-bg: #fde7e5; --warn: #8a5a00; --warn-bg: #fff1d6;
  --info: #1f4fa8; --info-bg: #e6eefc; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 13px/1.45 system-ui, "DejaVu Sans", sans-serif; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 12px 20px; padding: 12px 20px;
  background: #1d2330; color: #fff; }
header h1 { margin: 0; font-size: 17px; font-weight: 600; letter-spacing: .2px; }
header .policy { color: #c5cad6; font-size: 12px; }
#status { margin-left: auto; font-size: 12px; padding: 2px 10px; border-radius: 10px; background: #3a4356; }
#status.live { background: var(--ok); }
#status.down { background: var(--bad); }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; padding: 16px 20px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { margin: 0 0 8px; font-size: 14px; font-weight: 600; }
h3 { margin: 12px 0 4px; font-size: 13px; font-weight: 600; display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap; }
h3:first-child { margin-top: 0; }
.upstream + .upstream { margin-top: 14px; padding-top: 10px; border-top: 1px solid var(--line); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px 4px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--dim); font-weight: 500; font-size: 12px; white-space: nowrap; }
tr:last-child td { border-bottom: 0; }
td.num, th.num { text-align: right; padding-right: 14px; }
code, .mono { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12px; }
.dim { color: var(--dim); }
.empty { color: var(--dim); font-style: italic; padding: 4px 0; }
.error { color: var(--bad); }
.badge { display: inline-block; padding: 0 8px; border-radius: 9px; font-size: 12px; font-weight: 600; white-space: nowrap;
  background: #eef0f3; color: var(--dim); }
.badge.ok { background: var(--ok-bg); color: var(--ok); }
.badge.bad { background: var(--bad-bg); color: var(--bad); }
.badge.warn { background: var(--warn-bg); color: var(--warn); }
.badge.info { background: var(--info-bg); color: var(--info); }
.chip { font-size: 12px; color: var(--dim); font-weight: 400; }
.bar { display: inline-block; width: 80px; height: 8px; margin-right: 6px; border-radius: 4px; background: #eef0f3; overflow: hidden; vertical-align: middle; }
.bar > i { display: block; height: 100%; background: var(--info); }
ul.issues { margin: 6px 0 0; padding-left: 18px; }
`;

// Plain ES2020 for the browser: no template literals, so it sits in this string untouched.
const SCRIPT = `
'use strict';
(function () {
  var EVERY_MS = 1000;
  var MAX_DECISIONS = 100;
  var MAX_CHANGES = 20;
  // The last answer of each view; the last good upstreams and policy outlive a failed poll.
  var state = { upstreams: null, lastUpstreams: undefined, decisions: null, policy: null, policyError: null, at: null };

  // --- small, total helpers: any JSON value in, something drawable out ---------------------
  function isObj(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }
  function obj(v) { return isObj(v) ? v : {}; }
  function arr(v) { return Array.isArray(v) ? v : []; }
  function has(v) { return v !== null && v !== undefined && v !== ''; }
  function str(v) {
    if (!has(v)) return '\\u2014';
    if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(2);
    if (typeof v === 'string') return v;
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    try { return JSON.stringify(v); } catch (e) { return String(v); }
  }
  function el(tag, cls, content) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    add(node, content);
    return node;
  }
  function add(node, content) {
    if (content === undefined || content === null) return;
    if (Array.isArray(content)) { content.forEach(function (c) { add(node, c); }); return; }
    if (content instanceof Node) node.appendChild(content);
    else node.appendChild(document.createTextNode(str(content)));
  }
  function badge(text, tone) { return el('span', 'badge' + (tone ? ' ' + tone : ''), text); }
  function empty(text) { return el('div', 'empty', text); }
  function mono(text) { return el('span', 'mono', text); }

  // --- time: the views say when in ISO wall-clock time; shown as UTC clock + relative -------
  function dur(s) {
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + (s % 60 ? ' ' + (s % 60) + 's' : '');
    return Math.floor(s / 3600) + 'h' + (Math.floor(s / 60) % 60 ? ' ' + (Math.floor(s / 60) % 60) + 'm' : '');
  }
  function relative(t) {
    var d = Math.round((t - Date.now()) / 1000);
    if (d === 0) return 'now';
    return d > 0 ? 'in ' + dur(d) : dur(-d) + ' ago';
  }
  function clock(t) { return new Date(t).toISOString().slice(11, 19) + 'Z'; }
  function when(v) {
    if (!has(v)) return '\\u2014';
    if (typeof v === 'string') {
      var t = Date.parse(v);
      if (isNaN(t)) return v;
      var span = el('span', 'when', [clock(t) + ' ', el('span', 'dim', '(' + relative(t) + ')')]);
      span.title = v;
      return span;
    }
    return str(v);
  }

  // --- tables ---------------------------------------------------------------------------------
  // columns: [{ title, num?, cell(row) -> content }]; rows: any[]; key(row) -> data-key.
  function table(columns, rows, key) {
    var t = el('table');
    if (columns.some(function (c) { return c.title; })) {
      var head = el('tr');
      columns.forEach(function (c) { head.appendChild(el('th', c.num ? 'num' : '', c.title || [])); });
      t.appendChild(el('thead', '', head));
    }
    var body = el('tbody');
    rows.forEach(function (row) {
      var tr = el('tr');
      if (key) tr.setAttribute('data-key', String(key(row)));
      columns.forEach(function (c) {
        var v = c.cell(row);
        tr.appendChild(el('td', c.num ? 'num' : '', has(v) ? v : '\\u2014'));
      });
      body.appendChild(tr);
    });
    t.appendChild(body);
    return t;
  }
  function upstreamList(data) {
    var ups = obj(obj(data).upstreams);
    return Object.keys(ups).sort().map(function (name) { return { name: name, u: obj(ups[name]) }; });
  }
  // The effective policy (every default filled in) gives the configured limits the live views lack.
  function effective() { return obj(obj(obj(state.policy).body).effective); }
  function effectiveUpstream(name) { return obj(obj(effective().upstreams)[name]); }

  // --- sections ---------------------------------------------------------------------------------
  function breakerTone(s) {
    return s === 'closed' ? 'ok' : s === 'open' ? 'bad' : s === 'half-open' ? 'warn' : '';
  }
  function renderUpstreams(data) {
    var list = upstreamList(data);
    if (list.length === 0) return empty('no upstreams');
    return list.map(function (x) {
      var u = x.u;
      var eps = arr(u.endpoints).map(obj);
      var healthy = eps.filter(function (e) { return e.healthy !== false && !obj(e.outlier).ejected; }).length;
      var chips = [u.discovery, u.balancer].filter(has).map(function (c) { return el('span', 'chip', str(c)); });
      var resolved = u.resolved === false ? badge('unresolved', 'warn') : u.stale === true ? badge('stale', 'warn') : null;
      var b = isObj(u.circuitBreaker) ? u.circuitBreaker : null;
      var heading = el('h3', '', [el('span', 'upstream-name', x.name), badge(healthy + '/' + eps.length + ' eligible',
        eps.length === 0 || healthy === 0 ? 'bad' : healthy < eps.length ? 'warn' : 'ok')]);
      if (b) add(heading, badge('breaker ' + str(b.state), breakerTone(b.state)));
      if (resolved) add(heading, resolved);
      add(heading, chips);
      heading.setAttribute('data-upstream', x.name);
      var health = {};
      arr(u.healthChecks).forEach(function (h) { h = obj(h); if (typeof h.address === 'string') health[h.address] = h; });
      var rows = eps.length === 0 ? empty('no endpoints') : table([
        { title: 'address', cell: function (e) { return mono(e.address); } },
        { title: 'weight', num: true, cell: function (e) { return e.weight; } },
        { title: 'in flight', num: true, cell: function (e) { return e.inFlight; } },
        { title: 'healthy', cell: function (e) {
          if (!has(e.healthy)) return '\\u2014';
          var why = obj(health[e.address]).lastError;
          return [badge(e.healthy ? 'yes' : 'no', e.healthy ? 'ok' : 'bad'), has(why) ? el('span', 'dim', ' ' + str(why)) : null].filter(Boolean);
        } },
        { title: 'ejected until', cell: function (e) {
          var o = obj(e.outlier);
          if (!o.ejected) return o.probation ? badge('probation', 'warn') : '\\u2014';
          return [badge('ejected', 'bad'), ' ', when(o.until)];
        } },
        { title: 'ejections', num: true, cell: function (e) { return obj(e.outlier).ejections; } },
      ], eps, function (e) { return x.name + ' ' + str(e.address); });
      return el('div', 'upstream', [heading, rows]);
    });
  }
  function renderBreakers(data) {
    var list = upstreamList(data).filter(function (x) { return isObj(x.u.circuitBreaker); });
    if (list.length === 0) return empty('no upstream has a circuit breaker');
    return table([
      { title: 'upstream', cell: function (x) { return x.name; } },
      { title: 'state', cell: function (x) { var s = x.u.circuitBreaker.state; return badge(str(s), breakerTone(s)); } },
      { title: 'reason', cell: function (x) { return x.u.circuitBreaker.reason; } },
      { title: 'since', cell: function (x) { return when(x.u.circuitBreaker.since); } },
      { title: 'next probe', cell: function (x) {
        var b = x.u.circuitBreaker;
        if (has(b.nextProbeAt)) return when(b.nextProbeAt);
        if (b.state === 'open' && typeof b.retryAfterMs === 'number') return 'in ' + dur(Math.ceil(b.retryAfterMs / 1000));
        return '\\u2014';
      } },
      { title: 'failures in a row', num: true, cell: function (x) { return x.u.circuitBreaker.consecutiveFailures; } },
      { title: 'window fail/req', num: true, cell: function (x) {
        var b = x.u.circuitBreaker;
        return has(b.windowRequests) ? str(b.windowFailures) + '/' + str(b.windowRequests) : '\\u2014';
      } },
      { title: 'opens', num: true, cell: function (x) { return x.u.circuitBreaker.opensTotal; } },
    ], list, function (x) { return x.name; });
  }
  function renderConcurrency(data) {
    var list = upstreamList(data).filter(function (x) { return isObj(x.u.bulkhead) || isObj(x.u.adaptiveConcurrency); });
    if (list.length === 0) return empty('no bulkheads or adaptive limits');
    return table([
      { title: 'upstream', cell: function (x) { return x.name; } },
      { title: 'kind', cell: function (x) { return isObj(x.u.adaptiveConcurrency) ? badge('adaptive', 'info') : badge('bulkhead'); } },
      { title: 'in flight', num: true, cell: function (x) { return (isObj(x.u.adaptiveConcurrency) ? x.u.adaptiveConcurrency : x.u.bulkhead).inFlight; } },
      { title: 'limit', num: true, cell: function (x) {
        if (isObj(x.u.adaptiveConcurrency)) return x.u.adaptiveConcurrency.limit;
        var max = obj(effectiveUpstream(x.name).bulkhead).maxConcurrent;
        return has(max) ? max : obj(x.u.bulkhead).maxConcurrent;
      } },
      { title: 'queued', num: true, cell: function (x) { return obj(x.u.bulkhead).queued; } },
      { title: 'rtt / baseline ms', num: true, cell: function (x) {
        var a = obj(x.u.adaptiveConcurrency);
        return has(a.smoothedRttMs) || has(a.baselineRttMs) ? str(a.smoothedRttMs) + ' / ' + str(a.baselineRttMs) : '\\u2014';
      } },
      { title: 'rejected', num: true, cell: function (x) { return obj(x.u.adaptiveConcurrency).rejected; } },
    ], list, function (x) { return x.name; });
  }
  function burstOf(route) {
    var routes = arr(effective().routes).map(obj);
    var r = routes.filter(function (r) { return r.name === route; })[0];
    return r ? obj(r.rateLimit).burst : undefined;
  }
  function renderBuckets(data) {
    var limits = obj(obj(data).rateLimits);
    var rows = [];
    Object.keys(limits).sort().forEach(function (route) {
      var l = obj(limits[route]);
      var buckets = arr(l.buckets).map(obj);
      if (buckets.length === 0) rows.push({ route: route, keys: l.keys, b: null });
      buckets.forEach(function (b) { rows.push({ route: route, keys: l.keys, b: b }); });
    });
    if (rows.length === 0) return empty('no route has a rate limit');
    return table([
      { title: 'route', cell: function (r) { return r.route; } },
      { title: 'keys', num: true, cell: function (r) { return r.keys; } },
      { title: 'bucket', cell: function (r) { return r.b ? mono(r.b.key === '' ? '(one bucket)' : r.b.key) : '\\u2014'; } },
      { title: 'tokens', cell: function (r) {
        if (!r.b || typeof r.b.level !== 'number') return r.b ? str(r.b.level) : '\\u2014';
        var burst = burstOf(r.route);
        var out = [];
        if (typeof burst === 'number' && burst > 0) {
          var bar = el('span', 'bar');
          var fill = el('i');
          fill.style.width = Math.max(0, Math.min(100, (100 * r.b.level) / burst)) + '%';
          bar.appendChild(fill);
          out.push(bar, str(r.b.level) + ' / ' + burst);
        } else out.push(str(r.b.level));
        return out;
      } },
    ], rows, function (r) { return r.route + ' ' + (r.b ? str(r.b.key) : ''); });
  }
  // Policy hashes are 64 hex digits: 12 tell them apart on screen.
  function short(v) { return typeof v === 'string' && /^[0-9a-f]{40,}$/.test(v) ? v.slice(0, 12) : str(v); }
  function decisionTone(kind) {
    return kind === 'refusal' || kind === 'panic' ? 'warn' : kind === 'breaker' || kind === 'ejection' ? 'bad' : kind === 'reload' ? 'info' : '';
  }
  function renderDecisions(d) {
    if (d.status === 404) return empty('not available: this sidecar has no /admin/decisions');
    if (d.error) return el('div', 'error', 'could not read /admin/decisions: ' + d.error);
    var list = arr(obj(d.body).decisions).map(obj).slice(0, MAX_DECISIONS);
    if (list.length === 0) return empty('no decisions yet');
    return table([
      { title: 'at', cell: function (x) { return when(x.at); } },
      { title: 'kind', cell: function (x) { return badge(str(x.kind), decisionTone(x.kind)); } },
      { title: 'upstream', cell: function (x) { return x.upstream; } },
      { title: 'route', cell: function (x) { return x.route; } },
      { title: 'endpoint', cell: function (x) { return has(x.endpoint) ? mono(x.endpoint) : '\\u2014'; } },
      { title: 'what', cell: function (x) {
        var parts = [];
        if (x.ok === false) parts.push(badge('rejected', 'bad'));
        if (x.ok === true) parts.push(badge('applied', 'ok'));
        if (has(x.code)) parts.push(mono(x.code));
        if (has(x.caller)) parts.push(mono(x.caller));
        if (has(x.from) || has(x.to)) parts.push(short(x.from) + ' \\u2192 ' + short(x.to));
        if (has(x.until)) parts.push(['until ', when(x.until)]);
        // The detail says why for a person; the stable reason code stays in its tooltip.
        var why = el('span', 'dim', has(x.detail) ? str(x.detail) : has(x.reason) ? str(x.reason) : []);
        if (has(x.detail) && has(x.reason)) why.title = str(x.reason);
        if (has(x.detail) || has(x.reason)) parts.push(why);
        if (has(x.count) && x.count !== 1) parts.push(['\\u00d7' + str(x.count) + (has(x.lastAt) ? ', last ' : ''), has(x.lastAt) ? when(x.lastAt) : null]);
        return parts.length ? parts.reduce(function (a, p) { return a.concat(a.length ? [' '] : [], [p]); }, []) : null;
      } },
    ], list);
  }
  function renderPolicy(p) {
    if (!p) return el('div', 'error', 'could not read /admin/policy: ' + state.policyError);
    var b = obj(p.body);
    var last = isObj(b.lastReload) ? b.lastReload : null;
    var rows = [
      ['file', has(b.file) ? mono(b.file) : '\\u2014'],
      ['hash', has(b.hash) ? mono(str(b.hash).slice(0, 12)) : '\\u2014'],
      ['last reload', last ? [badge(last.ok === false ? 'rejected' : 'ok', last.ok === false ? 'bad' : 'ok'), ' ', when(last.at)] : '\\u2014'],
    ];
    var st = last ? obj(last.state) : {};
    if (arr(st.kept).length) rows.push(['kept', arr(st.kept).map(str).join(', ')]);
    if (arr(st.reset).length) rows.push(['reset', arr(st.reset).map(str).join(', ')]);
    var out = [table([
      { title: '', cell: function (r) { return r[0]; } },
      { title: '', cell: function (r) { return r[1]; } },
    ], rows)];
    out[0].classList.add('kv');
    var changes = last ? obj(last.changes) : {};
    var listed = [];
    arr(changes.changed).map(obj).forEach(function (c) { listed.push([badge('changed', 'info'), ' ', mono(c.path), ': ', short(c.from), ' \\u2192 ', short(c.to)]); });
    arr(changes.added).map(obj).forEach(function (c) { listed.push([badge('added', 'ok'), ' ', mono(c.path)]); });
    arr(changes.removed).map(obj).forEach(function (c) { listed.push([badge('removed', 'bad'), ' ', mono(c.path)]); });
    var more = Math.max(0, listed.length - MAX_CHANGES) + (typeof changes.omitted === 'number' ? changes.omitted : 0);
    if (listed.length) {
      var changeList = el('ul', 'issues changes');
      listed.slice(0, MAX_CHANGES).forEach(function (c) { changeList.appendChild(el('li', '', c)); });
      if (more > 0) changeList.appendChild(el('li', 'dim', 'and ' + more + ' more'));
      out.push(changeList);
    }
    var issues = last ? arr(last.issues).map(obj) : [];
    if (issues.length) {
      var ul = el('ul', 'issues error');
      issues.forEach(function (i) {
        var where = [i.file, i.line, i.column].filter(has).map(str).join(':');
        ul.appendChild(el('li', '', [where ? mono(where + ' ') : null, has(i.path) ? mono(str(i.path) + ': ') : null, str(i.message)].filter(Boolean)));
      });
      out.push(ul);
    }
    if (state.policyError) out.push(el('div', 'error', 'could not refresh: ' + state.policyError));
    return out;
  }

  // --- one refresh: fetch the three views, then redraw every section from them ------------------
  function get(path) {
    return fetch(path, { cache: 'no-store', headers: { accept: 'application/json' } }).then(function (res) {
      if (!res.ok) return { status: res.status, error: 'HTTP ' + res.status, body: null };
      return res.json().then(function (body) { return { status: res.status, body: body, error: null }; },
        function () { return { status: res.status, body: null, error: 'not JSON' }; });
    }, function (err) { return { status: 0, body: null, error: String(err && err.message || err) }; });
  }
  function draw(id, render, input) {
    var node = document.getElementById(id);
    try {
      node.replaceChildren.apply(node, [].concat(render(input)).filter(Boolean));
    } catch (err) {
      node.replaceChildren(el('div', 'error', 'could not draw this section: ' + String(err && err.message || err)));
      console.error('admin ui: ' + id, err);
    }
  }
  function drawAll() {
    var status = document.getElementById('status');
    var up = state.upstreams;
    if (up.error) {
      status.className = 'down';
      status.textContent = 'disconnected: ' + up.error + (state.at ? ' \\u00b7 last data ' + clock(state.at) : '');
    } else {
      state.at = Date.now();
      status.className = 'live';
      status.textContent = 'live \\u00b7 updated ' + clock(state.at);
    }
    var p = obj(state.policy && state.policy.body);
    document.getElementById('policy-line').textContent = has(p.file) ? str(p.file) + ' \\u00b7 ' + str(p.hash).slice(0, 12) : '';
    var body = state.upstreams.error ? state.lastUpstreams : state.upstreams.body;
    if (!state.upstreams.error) state.lastUpstreams = body;
    if (body === undefined) {
      ['upstreams', 'breakers', 'concurrency', 'buckets'].forEach(function (id) {
        document.getElementById(id).replaceChildren(el('div', 'error', 'could not read /admin/upstreams: ' + up.error));
      });
    } else {
      draw('upstreams', renderUpstreams, body);
      draw('breakers', renderBreakers, body);
      draw('concurrency', renderConcurrency, body);
      draw('buckets', renderBuckets, body);
    }
    draw('decisions', renderDecisions, state.decisions);
    draw('policy', renderPolicy, state.policy);
    document.body.setAttribute('data-refreshes', String(Number(document.body.getAttribute('data-refreshes') || 0) + 1));
  }
  var decisionsMissing = false;
  function tick() {
    // A hidden tab costs the sidecar nothing; it catches up when shown again.
    if (document.hidden) { setTimeout(tick, EVERY_MS); return; }
    Promise.all([
      get('/admin/upstreams'),
      // A sidecar without the view keeps answering 404: ask once, not every second.
      decisionsMissing ? Promise.resolve(state.decisions) : get('/admin/decisions'),
      get('/admin/policy'),
    ]).then(function (r) {
      state.upstreams = r[0];
      state.decisions = r[1];
      if (r[1].status === 404) decisionsMissing = true;
      // The policy view feeds limits and bursts into other sections: keep the last good one.
      if (!r[2].error) state.policy = r[2];
      state.policyError = r[2].error;
      drawAll();
    }).finally(function () { setTimeout(tick, EVERY_MS); });
  }
  tick();
})();
`;

/** `'sha256-…'`, the CSP source that allows exactly this inline text. */
function cspHash(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

/**
 * What the page may do: run its own inline script and style (by hash, nothing else inline), fetch
 * the admin views from its own origin, and nothing more: no other script, style, image (but the
 * empty data: favicon), font, frame, form target or embedding.
 */
export const ADMIN_UI_CSP = [
  "default-src 'none'",
  `script-src ${cspHash(SCRIPT)}`,
  `style-src ${cspHash(STYLE)}`,
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Pilotfish admin</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header><h1>Pilotfish admin</h1><span class="policy" id="policy-line"></span><span id="status">loading\u2026</span></header>
<main>
<section class="wide"><h2>Upstreams and endpoints</h2><div id="upstreams"><div class="empty">loading\u2026</div></div></section>
<section><h2>Circuit breakers</h2><div id="breakers"><div class="empty">loading\u2026</div></div></section>
<section><h2>Bulkheads and adaptive limits</h2><div id="concurrency"><div class="empty">loading\u2026</div></div></section>
<section><h2>Rate-limit buckets</h2><div id="buckets"><div class="empty">loading\u2026</div></div></section>
<section><h2>Policy</h2><div id="policy"><div class="empty">loading\u2026</div></div></section>
<section class="wide"><h2>Recent decisions</h2><div id="decisions"><div class="empty">loading\u2026</div></div></section>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;

const BODY = Buffer.from(PAGE, 'utf8');

/** Answers `GET|HEAD /admin/ui` (the caller has already checked `adminFrom` and the method). */
export function serveAdminUi(res: ServerResponse): void {
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': BODY.length,
    'cache-control': 'no-store',
    'content-security-policy': ADMIN_UI_CSP,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
  });
  res.end(BODY);
}
