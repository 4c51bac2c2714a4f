// A local OpenID Connect provider for bakery's e2e tests: oidc-provider (panva) behind node's own
// HTTPS server, one confidential client, the fixed accounts of accounts.json.
//
// Settings, from argv (--port 14300 or --port=14300) or else the environment:
//   --port            OIDC_PORT            port on 127.0.0.1 (default 14300)
//   --issuer          OIDC_ISSUER          e.g. https://oidc.bakery.test:14300
//   --tls-key         OIDC_TLS_KEY         PEM private key file
//   --tls-cert        OIDC_TLS_CERT        PEM certificate file (its SANs must name the issuer host)
//   --client-id       OIDC_CLIENT_ID       the one client (default "bakery-hub")
//   --client-secret   OIDC_CLIENT_SECRET   its secret (use URL-safe characters: see below)
//   --redirect-uris   OIDC_REDIRECT_URIS   a JSON list of the client's exact redirect URIs
//
// The login page is ours (not oidc-provider's devInteractions, which takes any login): the login
// name must be an account of accounts.json and the password that account's. There is no consent
// screen: loadExistingGrant grants the client every requested scope on the first authorization.
// Every request is logged to stdout with its status, and the provider's error events with their
// description.
//
// The client may authenticate at the token endpoint with client_secret_basic or
// client_secret_post (oidc-provider accepts either for a client registered with one of them).
// With basic, oidc-provider form-urldecodes the id and secret (RFC 6749 2.3.1): a '+' or '%' in a
// secret would be read differently from what a client that does not encode sends.
//
// oidc-provider 9 warns "Unsupported runtime" on Node.js 20 (it asks for 22 LTS) and about its
// in-memory adapter (sessions, grants and tokens die with the process): both are fine for a test.

import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const SETTINGS = {
  port: 'OIDC_PORT',
  issuer: 'OIDC_ISSUER',
  'tls-key': 'OIDC_TLS_KEY',
  'tls-cert': 'OIDC_TLS_CERT',
  'client-id': 'OIDC_CLIENT_ID',
  'client-secret': 'OIDC_CLIENT_SECRET',
  'redirect-uris': 'OIDC_REDIRECT_URIS',
};
const DEFAULTS = { port: '14300', 'client-id': 'bakery-hub' };

function settings() {
  const { values } = parseArgs({
    options: Object.fromEntries(Object.keys(SETTINGS).map((k) => [k, { type: 'string' }])),
  });
  const out = {};
  for (const [name, env] of Object.entries(SETTINGS)) {
    const value = values[name] ?? process.env[env] ?? DEFAULTS[name];
    if (!value) {
      console.error(`provider.mjs: --${name} (or ${env}) is required`);
      process.exit(2);
    }
    out[name] = value;
  }
  return out;
}

const conf = settings();
const redirectUris = JSON.parse(conf['redirect-uris']);
if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
  console.error('provider.mjs: --redirect-uris must be a non-empty JSON list');
  process.exit(2);
}

// login name (the `sub`) -> { password, claims }
const ACCOUNTS = JSON.parse(readFileSync(new URL('./accounts.json', import.meta.url), 'utf8'));

function log(...args) {
  console.log(new Date().toISOString(), ...args);
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function passwordMatches(login, password) {
  const account = Object.hasOwn(ACCOUNTS, login) ? ACCOUNTS[login] : undefined;
  const want = Buffer.from(account ? account.password : randomBytes(16).toString('hex'));
  const got = Buffer.from(String(password ?? ''));
  return account !== undefined && got.length === want.length && timingSafeEqual(got, want);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><h1>${escapeHtml(title)}</h1>
${body}
</body></html>`;
}

function loginPage(uid, { login = '', error = '' } = {}) {
  const message = error ? `<p id="error" class="error">${escapeHtml(error)}</p>` : '';
  return page('bakery test OIDC: sign in', `${message}
<form id="login-form" autocomplete="off" action="/interaction/${escapeHtml(uid)}" method="post">
  <label>Login <input required type="text" id="login" name="login" value="${escapeHtml(login)}" autofocus></label>
  <label>Password <input required type="password" id="password" name="password"></label>
  <button type="submit" id="submit" class="login-submit">Sign-in</button>
</form>
<p><a href="/interaction/${escapeHtml(uid)}/abort">Cancel</a></p>`);
}

// The signing key of ID tokens: a fresh one per start (nothing outlives a test run).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'bakery-e2e', use: 'sig', alg: 'RS256' };

const provider = new Provider(conf.issuer, {
  clients: [
    {
      client_id: conf['client-id'],
      client_secret: conf['client-secret'],
      redirect_uris: redirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  async findAccount(_ctx, sub) {
    if (!Object.hasOwn(ACCOUNTS, sub)) return undefined;
    return {
      accountId: sub,
      // oidc-provider keeps the claims of the granted scopes only.
      async claims() {
        return { sub, ...ACCOUNTS[sub].claims };
      },
    };
  },
  // No consent screen: the first authorization of a logged-in account grants what it asks.
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (!session.accountId) return undefined;
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
    await grant.save();
    return grant;
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
  },
  // A code lives 10 min, not 60 s: a hub under TCG may be slow to redeem it.
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 600,
    IdToken: 3600,
    Interaction: 3600,
    Session: 8 * 3600,
    Grant: 8 * 3600,
    RefreshToken: 24 * 3600,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page(
      'bakery test OIDC: error',
      Object.entries(out)
        .map(([k, v]) => `<p class="oidc-error"><b>${escapeHtml(k)}</b>: ${escapeHtml(v)}</p>`)
        .join('\n'),
    );
  },
});

for (const event of [
  'server_error',
  'authorization.error',
  'grant.error',
  'userinfo.error',
  'introspection.error',
  'revocation.error',
  'end_session.error',
  'jwks.error',
  'discovery.error',
]) {
  provider.on(event, (_ctx, err) => {
    log(`[${event}]`, err?.name, err?.message, err?.error_description ?? '', err?.error_detail ?? '');
  });
}
provider.on('grant.success', (ctx) => log('[grant.success]', ctx.oidc.client?.clientId));

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('request body too large');
  }
  return new URLSearchParams(body);
}

function send(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(html);
}

// Our interactions: /interaction/UID (GET: the login page, or the consent granted at once;
// POST: the login form) and /interaction/UID/abort.
async function interaction(req, res, uid, abort) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (abort) {
    const result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  const { prompt } = details;
  if (prompt.name === 'login') {
    if (req.method !== 'POST') {
      send(res, 200, loginPage(uid, { login: details.params.login_hint ?? '' }));
      return;
    }
    const form = await readForm(req);
    const login = form.get('login') ?? '';
    if (!passwordMatches(login, form.get('password'))) {
      log(`[login] refused: ${JSON.stringify(login)}`);
      send(res, 401, loginPage(uid, { login, error: 'Invalid login or password.' }));
      return;
    }
    log(`[login] ${login}`);
    await provider.interactionFinished(req, res, { login: { accountId: login } }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  if (prompt.name === 'consent') {
    // What loadExistingGrant did not cover (a later request for more): granted too.
    const { Grant } = provider;
    const grant = details.grantId
      ? await Grant.find(details.grantId)
      : new Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, {
      mergeWithLastSubmission: true,
    });
    return;
  }
  send(res, 501, page('bakery test OIDC: error', `<p>prompt ${escapeHtml(prompt.name)}</p>`));
}

const callback = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(\/abort)?$/;

const server = createServer(
  { key: readFileSync(conf['tls-key']), cert: readFileSync(conf['tls-cert']) },
  (req, res) => {
    const start = Date.now();
    res.on('finish', () => {
      log(`${req.socket.remoteAddress} ${req.method} ${req.headers.host ?? '-'}${req.url} -> ${res.statusCode} (${Date.now() - start} ms)`);
    });
    const path = req.url.split('?', 1)[0];
    const match = INTERACTION.exec(path);
    if (!match) {
      callback(req, res);
      return;
    }
    interaction(req, res, match[1], Boolean(match[2])).catch((err) => {
      log('[interaction]', err?.name, err?.message);
      if (!res.headersSent) {
        send(res, 400, page('bakery test OIDC: error', `<p class="oidc-error">${escapeHtml(err?.message)}</p>`));
      }
    });
  },
);

server.listen(Number(conf.port), '127.0.0.1', () => {
  log(`listening on https://127.0.0.1:${conf.port}, issuer ${conf.issuer}, client ${conf['client-id']}, redirect_uris ${JSON.stringify(redirectUris)}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log(`${signal}: stopping`);
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
