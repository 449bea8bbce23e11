/* segmenter.js: the visitor's segments, live in the page (docs/api.md#visitors). No dependencies.
 *
 *   Segmenter.connect(token)            // or connect(fn): fn() gives a token (or a Promise of one)
 *   Segmenter.on('entered', fn)         // also 'exited', 'snapshot', 'change', 'open', 'error'
 *   <div data-segment="vip" hidden>...  // shown while the visitor is in vip (any id of a list)
 *   <div data-segment-not="vip">...     // shown while the visitor is in none of them
 *   Segmenter.writeKey = 'wk'; Segmenter.userId = id;  // (or anonymousId), then:
 *   Segmenter.track('Order Completed', {revenue: 40})  // Segment's track call, to /v1/track
 *
 * The stream is GET /v1/visitor/stream?token= on the host this script came from (or
 * connect(token, {base: 'https://...'})). The browser resumes a dropped stream with
 * Last-Event-ID; when the stream is refused (an expired token, a restart) it is opened again
 * after a pause, with a fresh token when connect was given a function.
 * SPDX-License-Identifier: Apache-2.0 */
(function (w, d) {
  'use strict';
  var me = d.currentScript;
  var S = w.Segmenter = w.Segmenter || {};
  var handlers = {};
  var source = null;
  var getToken = null;
  var tries = 0;
  var timer = null;
  S.segments = new Set();
  S.last = null;
  S.connected = false;

  function base() {
    return S.base || (me && me.src ? new URL(me.src, location.href).origin : location.origin);
  }

  function emit(name, detail) {
    (handlers[name] || []).forEach(function (fn) {
      try { fn(detail); } catch (e) { w.console && console.error(e); }
    });
  }

  function ids(el, name) {
    return (el.getAttribute(name) || '').split(/\s+/).filter(Boolean);
  }

  S.on = function (name, fn) {
    (handlers[name] = handlers[name] || []).push(fn);
    return S;
  };

  S.has = function (id) { return S.segments.has(id); };

  /* Show or hide every element with data-segment / data-segment-not under root. */
  S.apply = function (root) {
    var els = (root || d).querySelectorAll('[data-segment],[data-segment-not]');
    Array.prototype.forEach.call(els, function (el) {
      var any = ids(el, 'data-segment');
      el.hidden = !((!any.length || any.some(S.has)) && !ids(el, 'data-segment-not').some(S.has));
    });
  };

  function changed(kind, message) {
    S.apply();
    emit(kind, message);
    emit('change', { kind: kind, segments: Array.from(S.segments) });
  }

  function listen(es) {
    es.addEventListener('snapshot', function (e) {
      var m = JSON.parse(e.data);
      S.segments = new Set(m.segments);
      S.last = m.sequence;
      changed('snapshot', m);
    });
    ['entered', 'exited'].forEach(function (kind) {
      es.addEventListener(kind, function (e) {
        var m = JSON.parse(e.data);
        m.kind = kind;
        S.last = m.sequence;
        S.segments[kind === 'entered' ? 'add' : 'delete'](m.segment);
        changed(kind, m);
      });
    });
    es.onopen = function () {
      tries = 0;
      S.connected = true;
      emit('open');
    };
    es.onerror = function () {
      S.connected = false;
      if (es.readyState !== 2) return; /* CONNECTING: the browser resumes by itself */
      emit('error', { retryInMs: pause() });
      timer = setTimeout(open, pause());
      tries += 1;
    };
  }

  function pause() { return Math.min(30000, 1000 * Math.pow(2, tries)); }

  function open() {
    Promise.resolve(getToken()).then(function (token) {
      if (source) source.close();
      var url = base() + '/v1/visitor/stream?token=' + encodeURIComponent(token);
      if (S.last !== null) url += '&last_event_id=' + S.last;
      source = new EventSource(url);
      listen(source);
    }, function (e) {
      emit('error', { error: e, retryInMs: pause() });
      timer = setTimeout(open, pause());
      tries += 1;
    });
  }

  /* Follow the visitor of token (a string, or a function giving one). */
  S.connect = function (token, options) {
    S.close();
    S.base = (options || {}).base || null;
    getToken = typeof token === 'function' ? token : function () { return token; };
    tries = 0;
    open();
    return S;
  };

  /* Segment's track call through the collector (docs/events.md), as analytics.js sends it:
   * the write key in the body and a text/plain body, so no CORS preflight. A Promise of the
   * collector's answer ({success: true} once the event is in Kafka). */
  S.track = function (event, properties) {
    var now = new Date().toISOString();
    var body = { writeKey: S.writeKey, event: event, properties: properties || {},
      timestamp: now, sentAt: now };
    body[S.userId ? 'userId' : 'anonymousId'] = S.userId || S.anonymousId;
    if (w.crypto && crypto.randomUUID) body.messageId = crypto.randomUUID();
    return fetch(base() + '/v1/track', { method: 'POST', body: JSON.stringify(body),
      keepalive: true, headers: { 'Content-Type': 'text/plain' } })
      .then(function (r) { return r.json(); });
  };

  S.close = function () {
    clearTimeout(timer);
    if (source) source.close();
    source = null;
    S.connected = false;
  };

  if (d.readyState === 'loading') {
    d.addEventListener('DOMContentLoaded', function () { S.apply(); });
  } else {
    S.apply();
  }
})(window, document);
