/**
 * The live page the coordinator serves at `GET /`: one self-contained HTML document (inline CSS
 * and script, nothing fetched but its own `/observe` WebSocket), and the page a request without
 * the token gets instead, which holds no run information at all. Strings only: serving them, and
 * who may see them, is coordinator/observers.ts's job.
 */

/**
 * The page's script: connects to `/observe`, renders each snapshot (coordinator/observers.ts
 * ObserverSnapshot), computes rates and ETAs from successive snapshots, and reconnects with
 * backoff while the run is alive. Text goes in with textContent only: an event's detail may
 * carry a worker's words.
 */
export const LIVE_PAGE_SCRIPT = `
'use strict';
const $ = (id) => document.getElementById(id);
const WINDOW_MS = 5000;
/** rank -> [[atMs, acknowledged], ...] within the current pass, oldest first. */
let history = new Map();
let pass = null;
let finished = false;
let delay = 500;
const passName = (e) => e === null ? '-' : e < 0 ? 'eval after epoch ' + (-e - 1) : 'epoch ' + e;
const fmtRate = (r) => r === undefined ? '-/s' : (r < 10 ? r.toFixed(1) : String(Math.round(r))) + '/s';
function fmtEta(left, rate) {
  if (rate === undefined || rate <= 0) return '-';
  const s = Math.ceil(left / rate);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
  return Math.floor(s / 3600) + 'h' + String(Math.floor(s / 60) % 60).padStart(2, '0') + 'm';
}
function rateOf(rank, now) {
  const h = history.get(rank);
  if (!h || h.length < 2) return undefined;
  let base = h[0];
  for (const p of h) if (p[0] <= now - WINDOW_MS) base = p;
  const last = h[h.length - 1];
  return last[0] > base[0] ? ((last[1] - base[1]) * 1000) / (last[0] - base[0]) : undefined;
}
function cell(row, text, cls) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  td.textContent = text;
  row.appendChild(td);
  return td;
}
function render(s) {
  if (s.epoch !== pass) { history = new Map(); pass = s.epoch; }
  const now = s.at;
  const body = $('ranks');
  body.replaceChildren();
  for (const r of s.ranks) {
    let h = history.get(r.rank);
    if (!h) history.set(r.rank, (h = []));
    // A count that went down started over (a replacement, a restart): so does its rate.
    if (h.length && r.acknowledged < h[h.length - 1][1]) h.length = 0;
    if (!h.length || h[h.length - 1][0] !== now) h.push([now, r.acknowledged]);
    while (h.length > 2 && h[1][0] <= now - WINDOW_MS) h.shift();
    const tr = document.createElement('tr');
    tr.dataset.rank = String(r.rank);
    tr.dataset.state = r.state;
    cell(tr, 'rank ' + r.rank);
    cell(tr, r.state, 'state ' + r.state);
    const bar = cell(tr, '', 'barcell');
    const outer = document.createElement('div');
    outer.className = 'bar';
    const inner = document.createElement('div');
    inner.style.width = (r.numSamples > 0 ? Math.min(100, (100 * r.acknowledged) / r.numSamples) : 0).toFixed(1) + '%';
    outer.appendChild(inner);
    bar.appendChild(outer);
    cell(tr, r.acknowledged + '/' + r.numSamples, 'num');
    const going = r.state === 'alive' || r.state === 'replaced';
    const done = r.numSamples > 0 && r.acknowledged >= r.numSamples;
    const rate = going && !done ? rateOf(r.rank, now) : undefined;
    cell(tr, going && !done ? fmtRate(rate) : '', 'num');
    cell(tr, done ? 'done' : going ? 'eta ' + fmtEta(r.numSamples - r.acknowledged, rate) : '', 'num');
    body.appendChild(tr);
  }
  $('phase').textContent = s.phase;
  $('epoch').textContent = passName(s.epoch);
  $('generation').textContent = String(s.generation);
  $('worldSize').textContent = String(s.worldSize);
  $('redelivered').textContent = String(s.redelivered);
  $('missing').textContent = String(s.missing);
  $('audited').textContent = String(s.audited);
  $('collectives').textContent = s.collectives.length === 0 ? 'none' : s.collectives.map((c) => c.op + ' #' + c.seq + (c.waitingFor.length ? ' waiting for ' + c.waitingFor.join(', ') : '')).join('; ');
  const list = $('events');
  list.replaceChildren();
  for (const e of s.events.slice().reverse()) {
    const li = document.createElement('li');
    li.dataset.type = e.type;
    const when = e.at ? e.at.slice(11, 19) + ' ' : '';
    const where = e.epoch === null ? '' : passName(e.epoch) + ': ';
    li.textContent = when + where + e.type + (e.rank === null ? '' : ' rank ' + e.rank) + ': ' + e.detail;
    list.appendChild(li);
  }
  if (s.finished) {
    finished = true;
    const f = $('finished');
    f.hidden = false;
    f.dataset.ok = String(s.finished.ok);
    f.textContent = 'run finished: ' + (s.finished.ok ? 'audit OK' : 'audit FAILED' + (s.finished.error ? ' (' + s.finished.error + ')' : ''));
  }
}
function connect() {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/observe');
  ws.onopen = () => { delay = 500; $('conn').textContent = 'live'; };
  ws.onmessage = (m) => render(JSON.parse(m.data));
  ws.onclose = () => {
    if (finished) { $('conn').textContent = 'closed'; return; }
    $('conn').textContent = 'disconnected: retrying in ' + (delay / 1000).toFixed(1) + ' s';
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 10000);
  };
}
connect();
`;

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .5em; }
.summary span { margin-right: 1.5em; }
.summary b { font-variant-numeric: tabular-nums; }
#conn { color: #666; }
#finished { margin: .8em 0; padding: .4em .8em; border-radius: 4px; background: #dfd; font-weight: bold; }
#finished[data-ok="false"] { background: #fdd; }
table { border-collapse: collapse; margin: 1em 0; }
td { padding: .2em .8em; border-bottom: 1px solid #e4e4e4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { width: 240px; height: 12px; background: #e8e8e8; border-radius: 3px; overflow: hidden; }
.bar > div { height: 100%; background: #4a90d9; }
.state.dead { color: #c00; font-weight: bold; }
.state.left, .state.standby, .state.joining { color: #888; }
.state.replaced { color: #b60; }
tr[data-state="dead"] .bar > div { background: #c88; }
ol#events { list-style: none; padding-left: 0; max-height: 24em; overflow: auto; font-family: ui-monospace, monospace; font-size: 12px; }
li[data-type="death"] { color: #c00; }
`;

/** The live page: the summary, one row per rank, the events, newest first. */
export const LIVE_PAGE_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>distsampler: live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${STYLE}</style></head>
<body>
<h1>distsampler run <small id="conn">connecting</small></h1>
<div class="summary">
<span>phase <b id="phase">-</b></span><span>pass <b id="epoch">-</b></span><span>generation <b id="generation">-</b></span>
<span>world size <b id="worldSize">-</b></span><span>passes audited <b id="audited">0</b></span>
<span>redelivered <b id="redelivered">0</b></span><span>missing <b id="missing">0</b></span>
<span>collectives in flight <b id="collectives">none</b></span>
</div>
<div id="finished" hidden></div>
<table><tbody id="ranks"></tbody></table>
<h2>Events</h2>
<ol id="events" reversed></ol>
<script>${LIVE_PAGE_SCRIPT}</script>
</body></html>
`;

/** What a request without the token gets (401): how to get in, and nothing about the run. */
export const DENIED_PAGE_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>distsampler: token needed</title></head>
<body><h1>401: token needed</h1>
<p>Open this page as <code>/?token=TOKEN</code> with the coordinator's token (--token or DISTSAMPLER_TOKEN).</p>
</body></html>
`;
