// imgate console: a view on the gateway's HTTP/JSON API (/v1/..., protobuf JSON), nothing
// more. Same origin only (the page's Content-Security-Policy says so too). The caller's
// token lives in sessionStorage: this tab only, gone when it closes.
'use strict';

const TOKEN_KEY = 'imgate.token';
const RECALL_PATH = '/v1/batches/{batch_id}:recall';
const state = { view: 'batches', batchId: '', watch: null, outcomes: [], recall: false,
  batches: [], nextPage: '', sandbox: false };

// -- helpers -------------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child ?? '');
  return node;
}

const short = (value, prefix) => (value || '').replace(prefix, '');
const number = (value) => Number(value || 0);

let noticeTimer = 0;

function notice(text, isError = true) {
  const node = $('#notice');
  node.textContent = text;
  node.className = isError ? 'error' : 'info';
  node.hidden = !text;
  clearTimeout(noticeTimer);
  if (text && !isError) noticeTimer = setTimeout(() => { node.hidden = true; }, 5000);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = 'GET', body, headers = {}, signal } = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const all = { Accept: 'application/json', ...headers };
  if (token) all.Authorization = `Bearer ${token}`;
  if (body !== undefined) all['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers: all, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const error = new ApiError(response.status, await response.json().catch(() => null));
    if (response.status === 401) notice('This gateway needs a caller token: enter it above.');
    throw error;
  }
  return response;
}

const getJson = async (path, options) => (await api(path, options)).json();

function violations(error) {
  const details = (error.body && error.body.details) || [];
  const found = details.flatMap((detail) => detail.fieldViolations || []);
  return found.map((v) => `${v.field}: ${v.description}`).join('; ');
}

function report(error) {
  notice(error instanceof ApiError ? (violations(error) || error.message) : String(error));
}

// Server-Sent Events over fetch (an EventSource cannot send the Authorization header).
async function* events(path, lastEventId, signal) {
  const headers = { Accept: 'text/event-stream' };
  if (lastEventId) headers['Last-Event-ID'] = lastEventId;
  const response = await api(path, { headers, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = { event: 'message', data: '', id: '' };
      for (const line of buffer.slice(0, end).split('\n')) {
        const colon = line.indexOf(':');
        const field = line.slice(0, colon);
        const text = line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') event.data += text;
        else if (field === 'event' || field === 'id') event[field] = text;
      }
      buffer = buffer.slice(end + 2);
      yield event;
    }
  }
}

// -- batches -------------------------------------------------------------------------------

// A bar of accepted (green), failed (red) and uncertain (amber) parts of the total.
function fill(bar, batch) {
  const total = number(batch.total);
  const parts = ['accepted', 'failed', 'uncertain'].map((kind) => {
    const part = el('div', { class: kind });
    part.style.width = `${total ? (100 * number(batch[kind])) / total : 0}%`;
    return part;
  });
  bar.replaceChildren(...parts);
  bar.title = `${total - number(batch.pending)} of ${total} have an outcome`;
  return bar;
}

const progress = (batch) => fill(el('div', { class: 'bar' }), batch);

function rate(batch) {
  const done = number(batch.total) - number(batch.pending);
  const start = Date.parse(batch.createTime);
  const ended = batch.summary !== undefined;
  const end = ended ? Date.parse(batch.updateTime) : Date.now();
  const seconds = Math.max((end - start) / 1000, 0.001);
  return done ? `${Math.round(done / seconds)}/s` : '–';
}

const running = (batch) => ['BATCH_STATE_QUEUED', 'BATCH_STATE_RUNNING', 'BATCH_STATE_SCHEDULED']
  .includes(batch.state);

async function cancel(batchId) {
  try {
    await api(`/v1/batches/${encodeURIComponent(batchId)}:cancel`, { method: 'POST', body: {} });
    notice(`Cancelled ${batchId}`, false);
    refresh();
  } catch (error) { report(error); }
}

async function recall(batchId) {
  try {
    const batch = await getJson(`/v1/batches/${encodeURIComponent(batchId)}:recall`,
      { method: 'POST', body: {} });
    notice(`Recall batch ${batch.batchId} of ${batchId}`, false);
    location.hash = `#batch/${batch.batchId}`;
  } catch (error) { report(error); }
}

function batchRow(batch) {
  const id = batch.batchId;
  const actions = el('td');
  if (running(batch)) actions.append(el('button', { onclick: () => cancel(id) }, 'Cancel'));
  if (state.recall && !running(batch) && !batch.recallOf) {
    actions.append(el('button', { onclick: () => recall(id) }, 'Recall'));
  }
  return el('tr', { 'data-batch': id },
    el('td', {}, el('a', { href: `#batch/${id}` }, id.slice(0, 12))),
    el('td', {}, batch.backend), el('td', { class: 'state' }, short(batch.state, 'BATCH_STATE_')),
    el('td', {}, progress(batch)),
    ...['accepted', 'failed', 'uncertain', 'pending'].map((k) => el('td', {}, number(batch[k]))),
    el('td', {}, rate(batch)), actions);
}

async function loadBatches(older = false) {
  const query = older && state.nextPage ? `&pageToken=${encodeURIComponent(state.nextPage)}` : '';
  const page = await getJson(`/v1/batches?pageSize=50${query}`);
  state.batches = older ? state.batches.concat(page.batches || []) : (page.batches || []);
  state.nextPage = page.nextPageToken || '';
  $('#batches tbody').replaceChildren(...state.batches.map(batchRow));
  $('#more-batches').hidden = !state.nextPage;
  $('#batches-updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// -- one batch -----------------------------------------------------------------------------

function showBatch(batch) {
  $('#batch-state').textContent = short(batch.state, 'BATCH_STATE_');
  const total = number(batch.total);
  fill($('#batch-bar'), batch);
  $('#batch-counts').textContent = `total ${total} · accepted ${number(batch.accepted)} · failed `
    + `${number(batch.failed)} · uncertain ${number(batch.uncertain)} · pending `
    + `${number(batch.pending)} · ${rate(batch)}`;
  $('#batch-cancel').hidden = !running(batch);
  $('#batch-recall').hidden = !state.recall || running(batch);
}

const MAX_ROWS = 2000;

function renderOutcomes() {
  const wanted = $('#outcome-filter').value;
  const shown = state.outcomes.filter((o) => !wanted || (o.state || '') === wanted);
  $('#outcomes tbody').replaceChildren(...shown.slice(0, MAX_ROWS).map((o) => el('tr', {},
    el('td', {}, number(o.index)), el('td', {}, o.recipientId),
    el('td', { class: 'state' }, short(o.state, 'DELIVERY_STATE_')),
    el('td', {}, short(o.reason, 'FAILURE_REASON_')), el('td', {}, o.vendorCode || ''),
    el('td', {}, o.detail || ''), el('td', {}, number(o.attempts)))));
  $('#outcomes-shown').textContent = `${Math.min(shown.length, MAX_ROWS)} shown of `
    + `${shown.length} (${state.outcomes.length} outcomes received)`;
}

// Follows the batch's outcomes live; after a broken connection it resumes after the last
// event it saw (Last-Event-ID = the cursor), so every outcome arrives exactly once.
async function watch(batchId) {
  const controller = new AbortController();
  state.watch = controller;
  let cursor = '';
  const path = `/v1/batches/${encodeURIComponent(batchId)}/outcomes`;
  while (!controller.signal.aborted) {
    try {
      $('#watch-status').textContent = 'live';
      for await (const event of events(path, cursor, controller.signal)) {
        if (event.event === 'end') { $('#watch-status').textContent = 'ended'; return; }
        const message = JSON.parse(event.data);
        if (event.event === 'error') { report(new ApiError(0, message)); return; }
        cursor = event.id || cursor;
        state.outcomes.push(...(message.outcomes || []));
        renderOutcomes();
        if (message.summary) showBatch(await getJson(`/v1/batches/${batchId}`));
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof ApiError) { report(error); return; }
      $('#watch-status').textContent = 'reconnecting…';
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

async function openBatch(batchId) {
  if (state.watch) state.watch.abort();
  state.batchId = batchId;
  state.outcomes = [];
  $('#batch-id').textContent = batchId;
  renderOutcomes();
  try {
    showBatch(await getJson(`/v1/batches/${encodeURIComponent(batchId)}`));
    watch(batchId);
  } catch (error) { report(error); }
}

// -- submit, backends ----------------------------------------------------------------------

async function loadBackends() {
  const answer = await getJson('/v1/backends');
  const select = $('#submit-backend');
  const chosen = select.value || answer.defaultBackend;
  select.replaceChildren(...(answer.backends || []).map((b) => el('option', { value: b.name }, b.name)));
  select.value = chosen;
  const use = {};
  for (const batch of state.batches.filter(running)) {
    use[batch.backend] = (use[batch.backend] || 0) + (Number.parseFloat(rate(batch)) || 0);
  }
  $('#backends tbody').replaceChildren(...(answer.backends || []).map((b) => {
    const limits = b.limits || {};
    const quota = [`${number(limits.callLimit)} calls / ${number(limits.callWindowS)} s`];
    if (limits.recipientLimit) quota.push(`${limits.recipientLimit} recipients / ${number(limits.recipientWindowS)} s`);
    let status = short(b.state, 'BACKEND_STATE_');
    const until = b.pausedUntil || b.blockedUntil;
    if (until) status += ` until ${new Date(until).toLocaleTimeString()}`;
    if (b.pauseReason) status += ` (${b.pauseReason})`;
    const perMinute = (use[b.name] || 0) * 60;
    const cap = limits.recipientLimit ? (limits.recipientLimit * 60) / number(limits.recipientWindowS) : 0;
    const shownUse = perMinute ? `${Math.round(perMinute)} recipients/min`
      + (cap ? ` (${Math.round((100 * perMinute) / cap)}% of quota)` : '') : 'idle';
    return el('tr', {}, el('td', {}, b.name), el('td', {}, b.vendor),
      el('td', { class: 'state' }, status), el('td', {}, quota.join(', ')),
      el('td', {}, shownUse), el('td', {}, `max ${number(limits.maxInFlight)}`));
  }));
}

async function submit(event) {
  event.preventDefault();
  const form = event.target;
  const ids = form.recipients.value.split(/[\s,]+/).filter(Boolean);
  const body = { backend: form.backend.value, senderId: form.sender.value.trim(),
    recipientIds: ids, message: { text: { text: form.text.value } } };
  if (form.request_id.value.trim()) body.requestId = form.request_id.value.trim();
  try {
    const batch = await getJson('/v1/batches', { method: 'POST', body });
    notice(`Submitted batch ${batch.batchId}`, false);
    location.hash = `#batch/${batch.batchId}`;
  } catch (error) { report(error); }
}

// -- sandbox -------------------------------------------------------------------------------

async function loadFaults() {
  const faults = await getJson('/sandbox/faults');
  $('#faults tbody').replaceChildren(...Object.entries(faults).map(([vendor, rules]) => el('tr', {},
    el('td', {}, vendor),
    el('td', {}, rules.map((r) => `${r.kind} (${r.times === null ? 'every call' : `${r.times} left`})`)
      .join(', ') || 'none'),
    el('td', {}, el('button', { onclick: () => putFaults(vendor, []) }, 'Clear')))));
  return faults;
}

async function putFaults(vendor, rules) {
  try {
    await api('/sandbox/faults', { method: 'PUT', body: { [vendor]: rules } });
    await loadFaults();
  } catch (error) { report(error); }
}

async function addFault(event) {
  event.preventDefault();
  const vendor = $('#fault-vendor').value;
  const current = (await getJson('/sandbox/faults'))[vendor] || [];
  const times = Number($('#fault-times').value);
  const delay = Number($('#fault-delay').value);
  const rule = { kind: $('#fault-kind').value, times: times || null, delay_s: delay || null };
  await putFaults(vendor, current.map(({ kind, delay_s, times: t, probability }) =>
    ({ kind, delay_s, times: t, probability })).concat([rule]));
}

async function showInbox(event) {
  if (event) event.preventDefault();
  const account = $('#inbox-account').value.trim();
  const vendor = $('#inbox-vendor').value;
  const query = new URLSearchParams({ recipient: account, limit: '1000' });
  if (vendor) query.set('vendor', vendor);
  try {
    const page = await getJson(`/sandbox/deliveries?${query}`);
    const rows = (page.deliveries || []).reverse().map((d) => el('tr', {},
      el('td', {}, d.seq), el('td', {}, new Date(d.time * 1000).toLocaleTimeString()),
      el('td', {}, d.vendor), el('td', {}, d.sender), el('td', {}, d.message_type),
      el('td', {}, d.message_id), el('td', {}, d.duplicate ? 'yes' : '')));
    $('#inbox tbody').replaceChildren(...rows);
    if (!rows.length) $('#inbox tbody').append(el('tr', {}, el('td', { colspan: 7 }, `nothing delivered to ${account}`)));
  } catch (error) { report(error); }
}

async function probeSandbox() {
  try {
    const index = await getJson('/sandbox/');
    state.sandbox = true;
    $('#sandbox-link').hidden = false;
    const options = index.vendors.map((v) => el('option', { value: v }, v));
    $('#fault-vendor').replaceChildren(...options);
    $('#inbox-vendor').replaceChildren(el('option', { value: '' }, 'all'),
      ...index.vendors.map((v) => el('option', { value: v }, v)));
  } catch { state.sandbox = false; }
}

// -- views ---------------------------------------------------------------------------------

async function refresh() {
  try {
    if (state.view === 'batches' || state.view === 'backends') await loadBatches();
    if (state.view === 'backends' || state.view === 'submit') await loadBackends();
    if (state.view === 'sandbox' && state.sandbox) await loadFaults();
  } catch (error) { if (!(error instanceof ApiError && error.status === 401)) report(error); }
}

function route() {
  const [view, id] = location.hash.slice(1).split('/');
  state.view = ['batches', 'submit', 'backends', 'sandbox', 'batch'].includes(view) ? view : 'batches';
  if (state.view !== 'batch' && state.watch) { state.watch.abort(); state.watch = null; }
  for (const section of document.querySelectorAll('main > section')) {
    section.hidden = section.dataset.view !== state.view;
  }
  for (const link of document.querySelectorAll('nav a[data-view]')) {
    link.classList.toggle('current', link.dataset.view === state.view);
  }
  if (state.view === 'batch' && id && id !== state.batchId) openBatch(decodeURIComponent(id));
  if (state.view !== 'batch') state.batchId = '';
  refresh();
}

async function start() {
  $('#token').value = sessionStorage.getItem(TOKEN_KEY) || '';
  $('#token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('#token').value.trim());
    notice('');
    probeSandbox().then(route);
  });
  $('#forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('#token').value = '';
  });
  $('#submit-form').addEventListener('submit', submit);
  $('#inbox-form').addEventListener('submit', showInbox);
  $('#fault-form').addEventListener('submit', addFault);
  $('#outcome-filter').addEventListener('change', renderOutcomes);
  $('#more-batches').addEventListener('click', () => loadBatches(true).catch(report));
  $('#batch-cancel').addEventListener('click', () => cancel(state.batchId));
  $('#batch-recall').addEventListener('click', () => recall(state.batchId));
  window.addEventListener('hashchange', route);
  try {
    // Recall appears once the gateway's API has the route (the document lists its routes).
    const openapi = await (await fetch('/v1/openapi.json')).json();
    state.recall = Boolean(openapi.paths && openapi.paths[RECALL_PATH]);
  } catch { state.recall = false; }
  await probeSandbox();
  route();
  setInterval(() => {
    if (state.view === 'batch' && state.batchId) {
      getJson(`/v1/batches/${encodeURIComponent(state.batchId)}`).then(showBatch).catch(() => {});
    } else if (state.view !== 'submit') refresh();
  }, 1500);
}

document.addEventListener('DOMContentLoaded', start);
