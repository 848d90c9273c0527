/* hybridbot chat widget: <script src="https://bot.example/widget.js" defer></script>. See docs/widget.md.
 * Message text is only ever rendered as text nodes (never innerHTML). Icons: Feather (MIT). */
(() => {
  'use strict';
  if (window.HybridBot) return;

  const script = document.currentScript;
  const ds = (script && script.dataset) || {};
  const scriptUrl = new URL((script && script.src) || location.href, location.href);
  const API = (ds.api ? new URL(ds.api, location.href).href : scriptUrl.origin).replace(/\/+$/, '');
  const CSS_URL = new URL('widget.css', scriptUrl).href;
  const flag = (v) => v !== undefined && !/^(false|0|no|off)$/i.test(v);
  const GREETING = ds.greeting || '';
  // data-bot names this bot on the site: each name keeps its own saved conversation and open state.
  const BOT = /^[A-Za-z0-9_-]{1,40}$/.test(ds.bot || '') ? ds.bot : '';
  if (ds.bot && !BOT) console.warn('hybridbot: data-bot must be 1-40 letters, digits, - or _; ignored');
  const CONV_KEY = BOT ? `hybridbot:${BOT}:conversation` : 'hybridbot:conversation';
  const OPEN_KEY = BOT ? `hybridbot:${BOT}:open` : 'hybridbot:open';
  const MAX_LEN = 2000;
  const IDLE_MS = 45000; // no byte (not even a ": ping") for this long -> give up on the stream
  const PHONE = '(max-width: 480px)';
  let token = ds.identityToken || '';

  // ---- words: English here; other languages from i18n/<lang>.json beside this script (docs/widget.md) ----
  const STRINGS = {
    title: 'Chat', launcher: 'Chat with {title}', subtitle: 'Automated assistant',
    newConversation: 'Start a new conversation', closeChat: 'Close chat', close: 'Close',
    conversation: 'Conversation', message: 'Message', placeholder: 'Type your message…',
    hint: 'Enter sends; Shift+Enter adds a line.', sendMessage: 'Send message', send: 'Send',
    assistantSaid: 'Assistant said', youSaid: 'You said', typing: 'The assistant is typing',
    loading: 'Loading your conversation…', newTab: '(opens in a new tab)', cutShort: 'This answer was cut short.',
    rate: 'Rate this answer', helpful: 'Helpful', notHelpful: 'Not helpful',
    thanksFeedback: 'Thanks for your feedback.', feedbackFailed: "Couldn't send your feedback.",
    whatWrong: 'What was wrong? (optional)', whatWrongLabel: 'What was wrong with this answer? (optional)',
    thanksComment: 'Thanks, that helps us improve.', commentFailed: "Couldn't send your comment.", retry: 'Retry',
    errorServer: 'Something went wrong on our side. Please try again.',
    errorRate: 'You are sending messages too quickly.', errorWait: 'Please wait {seconds} s.',
    errorRejected: 'Your message could not be sent.',
    errorTimeout: 'The assistant took too long to answer. Please try again.',
    errorOffline: "Can't reach the assistant. Check your connection and try again.",
    errorInterrupted: 'The connection was interrupted. Please try again.',
  };
  const LANGS = ['de', 'es', 'fr', 'nl']; // the i18n/*.json files shipped with the widget
  let LANG = (() => { // 'en' again if its file does not load
    const tag = String(ds.lang || document.documentElement.lang || 'en').trim().toLowerCase();
    return [tag, tag.split('-')[0]].find((l) => LANGS.includes(l)) || 'en';
  })();
  let T = STRINGS;
  const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
  const isObject = (o) => !!o && typeof o === 'object' && !Array.isArray(o);
  const t = (key, vars) => String(T[key] ?? STRINGS[key] ?? key)
    .replace(/\{(\w+)\}/g, (m, k) => (vars && own(vars, k) ? String(vars[k]) : m));
  // Known keys only (error_<code> replaces the server's message for that error code); others are reported.
  const merged = (base, extra, from) => {
    const out = { ...base };
    const unknown = [];
    for (const [k, v] of Object.entries(extra)) {
      if (typeof v === 'string' && (own(STRINGS, k) || /^error_[a-z_]+$/.test(k))) out[k] = v;
      else unknown.push(k);
    }
    if (unknown.length) console.warn(`hybridbot: ${from}: unknown or non-text keys ignored: ${unknown.join(', ')}`);
    return out;
  };
  const overrides = () => {
    if (!ds.strings) return {};
    try {
      const o = JSON.parse(ds.strings);
      if (isObject(o)) return o;
    } catch { /* reported below */ }
    console.warn('hybridbot: data-strings must be a JSON object of texts; ignored');
    return {};
  };
  async function loadStrings() {
    let base = STRINGS;
    if (LANG !== 'en') {
      const ctrl = new AbortController();
      const timer = setTimeout(() => ctrl.abort(), 3000); // a slow file must not keep the launcher away
      try {
        const res = await fetch(new URL(`i18n/${LANG}.json`, scriptUrl).href, { signal: ctrl.signal, credentials: 'omit' });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const texts = await res.json();
        if (!isObject(texts)) throw new Error('not a JSON object');
        base = merged(STRINGS, texts, `i18n/${LANG}.json`);
      } catch (err) {
        console.warn(`hybridbot: the ${LANG} texts did not load (${err.message || err}); showing English`);
        LANG = 'en';
      } finally {
        clearTimeout(timer);
      }
    }
    T = merged(base, overrides(), 'data-strings');
  }
  const title = () => ds.title || t('title');

  // Storage may throw (sandboxed iframes, strict privacy modes): then we just don't remember.
  const store = (kind, k, v) => {
    try {
      const s = window[kind];
      if (v === undefined) return s.getItem(k);
      if (v === null) s.removeItem(k); else s.setItem(k, v);
    } catch { /* ignore */ }
    return null;
  };
  const convId = () => store('localStorage', CONV_KEY);
  const setConv = (id) => { if (id) store('localStorage', CONV_KEY, String(id)); };
  const forget = () => store('localStorage', CONV_KEY, null);

  // ---- DOM helpers ----
  const h = (tag, props, ...kids) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids) if (kid != null) el.append(kid); // strings become text nodes
    return el;
  };
  const ICONS = {
    chat: 'M21 12a8 8 0 0 1-11.6 7.1L3 21l1.9-6.4A8 8 0 1 1 21 12z',
    close: 'M18 6L6 18M6 6l12 12',
    down: 'M6 9l6 6 6-6',
    send: 'M22 2L11 13M22 2l-7 20-4-9-9-4 20-7z',
    reset: 'M1 4v6h6M3.51 15a9 9 0 1 0 2.13-9.36L1 10',
    ext: 'M18 13v6a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h6M15 3h6v6M10 14L21 3',
    up: 'M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3',
  };
  const icon = (name) => {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    const attrs = { viewBox: '0 0 24 24', 'aria-hidden': 'true', focusable: 'false', class: `hb-icon hb-icon--${name}` };
    for (const [k, v] of Object.entries(attrs)) svg.setAttribute(k, v);
    const p = document.createElementNS(ns, 'path');
    p.setAttribute('d', ICONS[name]);
    svg.append(p);
    return svg;
  };
  const sr = (text) => h('span', { class: 'hb-sr' }, text);

  // ---- light formatting: **bold**, *em*, bare http(s) links; everything else literal ----
  const URL_RE = /https?:\/\/[^\s<>"'`]+/g;
  const EMPH_RE = /(\*\*|\*)([^\s*](?:[^*\n]*[^\s*])?)\1/g;
  const emph = (parent, s) => {
    let last = 0;
    for (const m of s.matchAll(EMPH_RE)) {
      if (m.index > 0 && /[\w*]/.test(s[m.index - 1])) continue; // intra-word: keep literal
      parent.append(s.slice(last, m.index), h(m[1] === '**' ? 'strong' : 'em', null, m[2]));
      last = m.index + m[0].length;
    }
    parent.append(s.slice(last));
  };
  const rich = (parent, text) => {
    let last = 0;
    for (const m of text.matchAll(URL_RE)) {
      let url = m[0].replace(/[.,;:!?'"]+$/, '');
      if (url.endsWith(')') && !url.includes('(')) url = url.replace(/\)+$/, '');
      emph(parent, text.slice(last, m.index));
      parent.append(h('a', { class: 'hb-link', href: url, target: '_blank', rel: 'noopener noreferrer nofollow' }, url));
      last = m.index + url.length;
    }
    emph(parent, text.slice(last));
  };
  const safeUrl = (u) => {
    try { const url = new URL(u, location.href); return /^https?:$/.test(url.protocol) ? url.href : null; } catch { return null; }
  };

  // ---- HTTP ----
  // An error the visitor may see: message, whether Retry makes sense, and how long to wait first.
  const ChatError = (message, o) => Object.assign(new Error(message), { chat: true, retry: true, retryAfter: 0 }, o);
  const api = (method, path, body, signal) => {
    const headers = { Accept: 'application/json' };
    if (body) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    return fetch(API + path, {
      method, headers, signal, body: body ? JSON.stringify(body) : undefined,
      credentials: 'omit', cache: 'no-store',
    });
  };
  const retryAfter = (v) => { // seconds or an HTTP date; capped
    const s = /^\d+$/.test(v || '') ? Number(v) : (Date.parse(v) - Date.now()) / 1000;
    return Number.isFinite(s) ? Math.max(0, Math.min(120, Math.ceil(s))) : 0;
  };
  // The server's message for an error code, unless the texts give one (error_<code>) in the page's language.
  const serverText = (code, message) => (code && T[`error_${code}`]) || (LANG === 'en' ? message : '') || '';
  const httpError = async (res) => {
    let msg = '';
    try {
      const { error } = await res.json();
      msg = serverText(String(error.code || ''), String(error.message || ''));
    } catch { /* not our JSON error */ }
    const s = res.status;
    if (s === 429) {
      const wait = retryAfter(res.headers.get('Retry-After'));
      return ChatError(`${msg || t('errorRate')}${wait ? ` ${t('errorWait', { seconds: wait })}` : ''}`, { retryAfter: wait });
    }
    if (s >= 500 || s === 408) return ChatError(t('errorServer'));
    return ChatError(msg || t('errorRejected'), { retry: s === 409 }); // fix the text, don't retry
  };
  const netError = (err) => (err && err.chat ? err
    : ChatError(t(err && err.name === 'AbortError' ? 'errorTimeout' : 'errorOffline')));

  // ---- UI ----
  let host, shadow, root, launcher, panel, log, input, sendBtn, resetBtn;
  let isOpen = false;
  let busy = false;
  let started = false; // greeting + history rendered
  let restoring = null; // promise while the transcript loads

  const nearEnd = () => log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const stick = (fn, force) => {
    const s = force || nearEnd();
    const out = fn();
    if (s) log.scrollTop = log.scrollHeight;
    return out;
  };

  function build() {
    host = h('div', { id: 'hybridbot' });
    host.style.display = 'none'; // until our stylesheet is in (CSSOM is allowed under strict CSP)
    shadow = host.attachShadow({ mode: 'open' });
    const show = () => { host.style.display = ''; };
    const link = h('link', { rel: 'stylesheet', href: CSS_URL, onload: show, onerror: show });

    launcher = h('button', {
      type: 'button', class: 'hb-launcher', 'aria-label': t('launcher', { title: title() }), 'aria-expanded': 'false',
      'aria-controls': 'hb-panel', onclick: () => toggle(),
    }, icon('chat'), icon('down'));

    resetBtn = h('button', { type: 'button', class: 'hb-icon-btn', 'aria-label': t('newConversation'), title: t('newConversation'), onclick: reset }, icon('reset'));
    const closeBtn = h('button', { type: 'button', class: 'hb-icon-btn', 'aria-label': t('closeChat'), title: t('close'), onclick: () => close() }, icon('close'));
    const header = h('div', { class: 'hb-header' },
      h('div', { class: 'hb-heading' }, h('h2', { class: 'hb-title', id: 'hb-title' }, title()), h('p', { class: 'hb-sub' }, t('subtitle'))),
      resetBtn, closeBtn);

    log = h('div', { class: 'hb-log', role: 'log', 'aria-live': 'polite', 'aria-label': t('conversation'), tabindex: '0' });

    input = h('textarea', {
      id: 'hb-input', class: 'hb-input', rows: '1', maxlength: String(MAX_LEN), placeholder: t('placeholder'),
      autocomplete: 'off', enterkeyhint: 'send', 'aria-describedby': 'hb-hint',
    });
    sendBtn = h('button', { type: 'submit', class: 'hb-send', 'aria-label': t('sendMessage'), title: t('send') }, icon('send'));
    const form = h('form', { class: 'hb-composer', novalidate: true },
      h('label', { class: 'hb-sr', for: 'hb-input' }, t('message')),
      h('span', { class: 'hb-sr', id: 'hb-hint' }, t('hint')),
      input, sendBtn);
    form.addEventListener('submit', (e) => { e.preventDefault(); submit(); });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) { e.preventDefault(); submit(); }
    });
    input.addEventListener('input', () => {
      input.style.height = 'auto';
      input.style.height = `${Math.min(input.scrollHeight, 132)}px`;
    });

    panel = h('div', { class: 'hb-panel', id: 'hb-panel', role: 'dialog', 'aria-labelledby': 'hb-title', hidden: true }, header, log, form);
    root = h('div', { class: `hb-root${ds.position === 'left' ? ' hb-root--left' : ''}`, lang: LANG }, panel, launcher);
    shadow.append(link, root);
    shadow.addEventListener('keydown', onKey);
  }

  function onKey(e) {
    if (e.key === 'Escape' && isOpen) { e.preventDefault(); close(true); }
  }

  function setBusy(b) {
    busy = b;
    sendBtn.disabled = b;
    resetBtn.disabled = b;
    log.querySelectorAll('button.hb-chip').forEach((el) => { el.disabled = b; });
  }

  // ---- open / close ----
  function open({ focus = true } = {}) {
    if (!isOpen) {
      isOpen = true;
      panel.hidden = false;
      panel.setAttribute('aria-modal', String(matchMedia(PHONE).matches));
      root.classList.add('hb-root--open');
      launcher.setAttribute('aria-expanded', 'true');
      store('sessionStorage', OPEN_KEY, '1');
      start();
      log.scrollTop = log.scrollHeight;
    }
    if (focus) input.focus();
  }
  function close(returnFocus) {
    if (!isOpen) return;
    const inside = panel.contains(shadow.activeElement);
    isOpen = false;
    panel.hidden = true;
    root.classList.remove('hb-root--open');
    launcher.setAttribute('aria-expanded', 'false');
    store('sessionStorage', OPEN_KEY, null);
    if (returnFocus || inside) launcher.focus();
  }
  const toggle = () => (isOpen ? close(true) : open());

  // ---- transcript ----
  function start() {
    if (started) return;
    started = true;
    greet();
    const id = convId();
    if (id || token) restoring = restore(id).finally(() => { restoring = null; });
  }
  function greet() {
    if (GREETING) log.append(h('div', { class: 'hb-turn hb-turn--greeting' }, sr(t('assistantSaid')), bubble(GREETING)));
  }
  function reset() {
    if (!busy) { forget(); log.textContent = ''; greet(); input.focus(); }
  }
  // The conversation this browser remembers; failing that, a signed-in visitor's latest one (from any device).
  async function restore(id) {
    setBusy(true);
    const note = h('p', { class: 'hb-status' }, t('loading'));
    log.append(note);
    try {
      let res = id ? await api('GET', `/api/conversations/${encodeURIComponent(id)}`) : null;
      if (res && [400, 404, 410].includes(res.status)) { forget(); res = null; } // expired/unusable: start afresh, silently
      if (!res && token) res = await api('GET', '/api/me/conversation');
      if (!res) return;
      if (!res.ok) throw await httpError(res);
      const data = await res.json();
      if (data.conversation_id !== id) {
        id = data.conversation_id;
        if (!id) return;
        setConv(id);
      }
      const turns = Array.isArray(data.turns) ? data.turns : [];
      stick(() => turns.forEach((t, i) => {
        if (t.text_in) log.append(userRow(t.text_in));
        const turn = newTurn(id);
        turn.finish({ turn_id: t.turn_id, replies: t.replies || [] }, { chips: i === turns.length - 1, rating: t.feedback && t.feedback.rating });
      }), true);
    } catch (err) {
      const box = errorBox(netError(err), () => { box.remove(); restoring = restore(id).finally(() => { restoring = null; }); });
      log.append(box);
    } finally {
      note.remove();
      setBusy(false);
    }
  }

  const bubble = (text) => { const el = h('div', { class: 'hb-msg hb-msg--bot' }); rich(el, text); return el; };
  const userRow = (text) => h('div', { class: 'hb-row hb-row--user' }, sr(t('youSaid')), h('div', { class: 'hb-msg hb-msg--user' }, text));

  function chipsFor(buttons) {
    const wrap = h('div', { class: 'hb-chips' });
    for (const b of buttons || []) {
      if (!b || !b.title) continue;
      if (b.url) {
        const url = safeUrl(b.url);
        if (url) wrap.append(h('a', { class: 'hb-chip hb-chip--link', href: url, target: '_blank', rel: 'noopener noreferrer' }, b.title, icon('ext'), sr(` ${t('newTab')}`)));
      } else {
        wrap.append(h('button', { type: 'button', class: 'hb-chip', disabled: busy, onclick: () => send(b.payload || b.title, b.title) }, b.title));
      }
    }
    return wrap.childElementCount ? wrap : null;
  }
  // Quick replies belong to the latest bot turn only; links stay.
  const retireChips = () => log.querySelectorAll('button.hb-chip').forEach((el) => {
    const wrap = el.parentNode;
    el.remove();
    if (!wrap.childElementCount) wrap.remove();
  });

  function feedbackBar(conversationId, turnId, rating) {
    let current = rating === 'up' || rating === 'down' ? rating : null;
    const status = h('span', { class: 'hb-fb-status', role: 'status' });
    const mk = (r, label) => h('button', { type: 'button', class: `hb-thumb hb-thumb--${r}`, 'aria-label': label, title: label, 'aria-pressed': String(current === r), onclick: () => rate(r) }, icon('up'));
    const up = mk('up', t('helpful'));
    const down = mk('down', t('notHelpful'));
    const bar = h('div', { class: 'hb-feedback', role: 'group', 'aria-label': t('rate') }, up, down, status);
    const show = (r) => { up.setAttribute('aria-pressed', String(r === 'up')); down.setAttribute('aria-pressed', String(r === 'down')); };
    const send = async (r, comment) => {
      const res = await api('POST', '/api/feedback', { conversation_id: conversationId, turn_id: turnId, rating: r, comment });
      if (!res.ok) throw await httpError(res);
    };
    let form = null;
    async function rate(r) {
      if (current === r) return; // one vote per turn; switching sides updates it
      const prev = current;
      current = r;
      show(r);
      status.textContent = '';
      if (form) { form.remove(); form = null; }
      try {
        await send(r, '');
        status.textContent = t('thanksFeedback');
        if (r === 'down') bar.append(form = commentForm());
      } catch {
        current = prev;
        show(prev);
        status.textContent = t('feedbackFailed');
      }
    }
    // After a thumbs-down: an optional "what was wrong?" line, sent with the same vote. Focus stays put.
    function commentForm() {
      const id = `hb-fb-${turnId}`;
      const box = h('input', { id, class: 'hb-fb-input', type: 'text', maxlength: String(MAX_LEN), autocomplete: 'off', placeholder: t('whatWrong') });
      const el = h('form', { class: 'hb-fb-comment' }, h('label', { class: 'hb-sr', for: id }, t('whatWrongLabel')), box, h('button', { type: 'submit', class: 'hb-fb-send' }, t('send')));
      el.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const text = box.value.trim();
        if (!text) return;
        try {
          await send('down', text);
          el.remove();
          status.textContent = t('thanksComment');
          form = null;
        } catch {
          status.textContent = t('commentFailed');
        }
      });
      return el;
    }
    return bar;
  }

  function errorBox(err, retry) {
    const box = h('div', { class: 'hb-error', role: 'alert' }, h('span', { class: 'hb-error-text' }, err.message));
    if (err.retry && retry) {
      const btn = h('button', { type: 'button', class: 'hb-retry', onclick: retry, disabled: err.retryAfter > 0 }, t('retry'));
      if (err.retryAfter > 0) setTimeout(() => { btn.disabled = false; }, err.retryAfter * 1000);
      box.append(btn);
    }
    return box;
  }

  // One bot turn in the log: typing dots -> streamed bubbles -> final replies + chips + thumbs.
  function newTurn(conversationId) {
    const el = h('div', { class: 'hb-turn', 'data-state': 'pending' }, sr(t('assistantSaid')));
    const typing = h('div', { class: 'hb-typing' }, sr(t('typing')), h('span', { class: 'hb-dot' }), h('span', { class: 'hb-dot' }), h('span', { class: 'hb-dot' }));
    const bubbles = []; // { el, text }
    const turn = { el, conversationId, id: null };
    const at = (i) => {
      while (bubbles.length <= i) {
        const b = { el: bubble(''), text: '' };
        el.insertBefore(b.el, typing.parentNode === el ? typing : null);
        bubbles.push(b);
      }
      return bubbles[i];
    };
    const paint = (b) => { b.el.textContent = ''; rich(b.el, b.text); };
    turn.typing = () => stick(() => el.append(typing));
    turn.delta = (i, text) => stick(() => {
      typing.remove();
      el.dataset.state = 'streaming';
      log.setAttribute('aria-busy', 'true');
      const b = at(Math.max(0, Math.min(Number(i) || 0, 50)));
      b.text += text;
      paint(b);
    });
    turn.finish = (data, { chips = true, rating = null, incomplete = false } = {}) => stick(() => {
      typing.remove();
      log.removeAttribute('aria-busy');
      const replies = Array.isArray(data.replies) ? data.replies : [];
      turn.id = data.turn_id || turn.id;
      replies.forEach((r, i) => {
        const b = at(i);
        b.text = String((r && r.text) || '');
        paint(b);
        b.el.hidden = !b.text;
        const row = chips && r && chipsFor(r.buttons);
        if (row) b.el.after(row);
      });
      bubbles.slice(replies.length).forEach((b) => b.el.remove());
      if (incomplete) el.append(h('p', { class: 'hb-note' }, t('cutShort')));
      if (turn.id && turn.conversationId && replies.length) el.append(feedbackBar(turn.conversationId, turn.id, rating));
      if (!replies.length && !bubbles.length) el.remove();
      el.dataset.state = 'done';
    });
    turn.fail = (err, retry) => stick(() => {
      typing.remove();
      log.removeAttribute('aria-busy');
      el.dataset.state = 'error';
      if (!bubbles.length) el.querySelector('.hb-sr')?.remove();
      el.append(errorBox(err, retry));
    });
    log.append(el);
    return turn;
  }

  // ---- sending ----
  function submit() {
    const text = input.value;
    if (busy || !text.trim()) return;
    send(text);
    input.value = '';
    input.dispatchEvent(new Event('input'));
  }

  async function send(text, label) {
    text = String(text == null ? '' : text);
    if (!text.trim()) return false;
    open({ focus: false });
    if (restoring) await restoring;
    if (busy) return false;
    retireChips();
    stick(() => log.append(userRow(label || text)), true);
    return runTurn(text);
  }

  async function runTurn(text, fresh = false) {
    setBusy(true);
    const id = fresh ? null : convId();
    const turn = newTurn(id);
    turn.typing();
    try {
      const ok = await exchange(text, id, turn);
      if (ok === 'expired') { turn.el.remove(); forget(); setBusy(false); return await runTurn(text, true); }
      return true;
    } catch (err) {
      const e = netError(err);
      turn.fail(e, () => { turn.el.remove(); runTurn(text); });
      if (!e.retry && !input.value) { input.value = text; input.dispatchEvent(new Event('input')); }
      return false;
    } finally {
      if (busy) setBusy(false);
    }
  }

  // POST the message and read the SSE reply (plain JSON is accepted too). Returns 'expired' on an unknown
  // conversation (the server applied nothing, so starting a new one is not a replay).
  async function exchange(text, id, turn) {
    const body = { message: text };
    if (id) body.conversation_id = id;
    const ctrl = new AbortController();
    let timer = 0;
    const arm = () => { clearTimeout(timer); timer = setTimeout(() => ctrl.abort(), IDLE_MS); };
    arm();
    let reader = null;
    try {
      const res = await api('POST', '/api/chat/stream', body, ctrl.signal);
      if (res.status === 404 && id) return 'expired';
      if (!res.ok) throw await httpError(res);
      const apply = (d) => { setConv(d.conversation_id); turn.conversationId = d.conversation_id || turn.conversationId; };
      if (!(res.headers.get('Content-Type') || '').includes('text/event-stream') || !res.body) {
        const data = await res.json();
        apply(data);
        turn.finish(data);
        return true;
      }
      reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let ev = { type: 'message', data: [] };
      let finished = false;
      const handle = (type, raw) => {
        let d;
        try { d = JSON.parse(raw); } catch { return; }
        if (!d || typeof d !== 'object') return;
        if (type === 'meta') { apply(d); turn.id = d.turn_id; }
        else if (type === 'delta') turn.delta(d.index, String(d.text ?? ''));
        else if (type === 'done') { apply(d); turn.finish(d, { incomplete: !!d.incomplete }); finished = true; }
        else if (type === 'error') {
          throw ChatError(serverText(String(d.code || ''), String(d.message || '')) || t('errorServer'));
        }
      };
      while (!finished) {
        const { value, done } = await reader.read();
        arm();
        buf += done ? dec.decode() : dec.decode(value, { stream: true });
        let nl;
        while (!finished && (nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (ev.data.length) handle(ev.type, ev.data.join('\n'));
            ev = { type: 'message', data: [] };
          } else if (line[0] !== ':') {
            const c = line.indexOf(':');
            const field = c < 0 ? line : line.slice(0, c);
            let v = c < 0 ? '' : line.slice(c + 1);
            if (v[0] === ' ') v = v.slice(1);
            if (field === 'event') ev.type = v;
            else if (field === 'data') ev.data.push(v);
          }
        }
        if (done) break;
      }
      if (!finished) throw ChatError(t('errorInterrupted'));
      return true;
    } finally {
      clearTimeout(timer);
      if (reader) reader.cancel().catch(() => {});
    }
  }

  // ---- host-page hooks and public API ----
  document.addEventListener('click', (e) => {
    const el = e.target instanceof Element && e.target.closest('[data-hybridbot-send],[data-hybridbot-open]');
    if (!el) return;
    e.preventDefault();
    const text = el.getAttribute('data-hybridbot-send');
    ready.then(() => { // a click while the widget's texts load still counts
      open();
      if (text) send(text);
    });
  });

  const ready = loadStrings().then(() => new Promise((resolve) => {
    const init = () => {
      build();
      document.body.append(host);
      if (flag(ds.open) || store('sessionStorage', OPEN_KEY) === '1') open({ focus: false });
      resolve();
    };
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
    else init();
  }));

  window.HybridBot = Object.freeze({
    open: () => ready.then(() => open()),
    close: () => ready.then(() => close()),
    toggle: () => ready.then(() => toggle()),
    send: (text) => ready.then(() => send(text)),
    reset: () => ready.then(() => reset()),
    identify: (t) => { token = t ? String(t) : ''; },
  });
})();
