// A client for Shoal's REST API (/v1) with the key the user signed in with.

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class API {
  constructor(key, onUnauthorized) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
  }

  async req(method, path, body, raw) {
    const headers = { Authorization: `Bearer ${this.key}` };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new APIError(0, 'network', 'The server cannot be reached. Check your connection.');
    }
    if (res.status === 204) return null;
    if (raw && res.ok) return res.text();
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const e = (data && data.error) || {};
      const err = new APIError(res.status, e.code || 'http_' + res.status, e.message || `HTTP ${res.status}`);
      if (res.status === 401 && this.onUnauthorized) this.onUnauthorized(err);
      throw err;
    }
    return data;
  }

  get(path) { return this.req('GET', path); }
  // text GETs path and returns the body as text (CSV).
  text(path) { return this.req('GET', path, undefined, true); }
  post(path, body) { return this.req('POST', path, body === undefined ? {} : body); }
  patch(path, body) { return this.req('PATCH', path, body); }
  del(path) { return this.req('DELETE', path); }
}

// checkKey tells whether key is accepted; it throws APIError otherwise.
export async function checkKey(key) {
  const api = new API(key);
  await api.get('/v1/live-streams');
  return api;
}
