// Entry point of the dashboard: sign in with an API key (kept in this
// tab's sessionStorage, sent only to this node's /v1 API), then the live
// streams, videos, nodes and analytics sections, refreshed while they are shown.

import '../common/base.css';
import './dashboard.css';
import { toast } from '../common/dom.js';
import { API, checkKey } from './api.js';
import { LiveSection } from './live.js';
import { VideosSection } from './videos.js';
import { NodesSection } from './nodes.js';
import { AnalyticsSection } from './analytics.js';

const KEY = 'shoal.apiKey';
const SECTIONS = ['live', 'videos', 'nodes', 'analytics'];
const POLL_MS = { live: 5000, videos: 4000, nodes: 5000, analytics: 30000 };

const signinView = document.getElementById('signin');
const consoleView = document.getElementById('console');
const signinForm = document.getElementById('signin-form');
const keyInput = document.getElementById('api-key');
const signinError = document.getElementById('signin-error');
const signoutBtn = document.getElementById('signout');

let app = null;

function storedKey() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

function storeKey(k) {
  try {
    if (k) sessionStorage.setItem(KEY, k);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage disabled: the key lives as long as the page.
  }
}

signinForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const key = keyInput.value.trim();
  signinError.hidden = true;
  if (!key) {
    showSigninError('Enter an API key.');
    return;
  }
  const btn = signinForm.querySelector('button[type=submit]');
  btn.disabled = true;
  try {
    await checkKey(key);
    storeKey(key);
    keyInput.value = '';
    enter(key);
  } catch (err) {
    showSigninError(err.status === 401 ? 'This API key was not accepted. Check it and try again.' : err.message);
  } finally {
    btn.disabled = false;
  }
});

signoutBtn.addEventListener('click', () => signOut());

function showSigninError(msg) {
  signinError.textContent = msg;
  signinError.hidden = false;
  keyInput.focus();
}

function signOut(msg) {
  storeKey('');
  if (app) app.stop();
  app = null;
  consoleView.hidden = true;
  signoutBtn.hidden = true;
  signinView.hidden = false;
  document.body.dataset.view = 'signin';
  if (msg) showSigninError(msg);
  else keyInput.focus();
}

function enter(key) {
  const api = new API(key, () => signOut('Your API key is no longer accepted. Sign in again.'));
  signinView.hidden = true;
  consoleView.hidden = false;
  signoutBtn.hidden = false;
  document.body.dataset.view = 'console';
  app = new App(api);
  app.start();
}

class App {
  constructor(api) {
    this.api = api;
    this.sections = {
      live: new LiveSection(document.getElementById('panel-live'), api),
      videos: new VideosSection(document.getElementById('panel-videos'), api),
      nodes: new NodesSection(document.getElementById('panel-nodes'), api),
      analytics: new AnalyticsSection(document.getElementById('panel-analytics'), api),
    };
    this.timers = {};
    this.onHash = () => this.show(currentSection());
  }

  start() {
    window.addEventListener('hashchange', this.onHash);
    this.show(currentSection(), true);
    // Nodes are sampled all the time, for the charts; analytics are
    // loaded when shown.
    for (const name of SECTIONS) if (name !== 'analytics' || this.current === name) this.poll(name);
  }

  stop() {
    window.removeEventListener('hashchange', this.onHash);
    this.sections.live.stop();
    for (const t of Object.values(this.timers)) clearTimeout(t);
    this.stopped = true;
  }

  show(name, initial) {
    for (const s of SECTIONS) {
      const panel = document.getElementById('panel-' + s);
      panel.hidden = s !== name;
      const link = document.querySelector(`.tabs a[href="#${s}"]`);
      if (s === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    this.current = name;
    if (name === 'analytics') this.sections.analytics.fromHash(location.hash);
    if (!initial) {
      const heading = document.querySelector(`#panel-${name} h2`);
      if (heading) {
        heading.setAttribute('tabindex', '-1');
        heading.focus({ preventScroll: true });
      }
      this.poll(name);
    }
    if (name === 'nodes') this.sections.nodes.resize();
  }

  // poll refreshes a section now and again later: often while it is shown,
  // rarely while hidden (nodes keep their pace for the charts).
  async poll(name) {
    clearTimeout(this.timers[name]);
    if (this.stopped) return;
    let ok = true;
    try {
      await this.sections[name].refresh();
      this.failing = false;
    } catch (err) {
      ok = false;
      if (err.status !== 401 && !this.failing) {
        this.failing = true;
        toast(err.message, 'error');
      }
    }
    if (this.stopped) return;
    const visible = this.current === name || name === 'nodes';
    if (name === 'analytics' && !visible) return; // loaded again when shown
    const ms = ok ? (visible ? POLL_MS[name] : 30000) : 10000;
    this.timers[name] = setTimeout(() => this.poll(name), ms);
  }
}

// currentSection is the section the address names: #live, #videos,
// #nodes, #analytics (#analytics/video/<id>: one video's).
function currentSection() {
  const s = location.hash.replace(/^#/, '').split('/')[0];
  return SECTIONS.includes(s) ? s : 'live';
}

const saved = storedKey();
if (saved) {
  enter(saved);
} else {
  document.body.dataset.view = 'signin';
  keyInput.focus();
}

