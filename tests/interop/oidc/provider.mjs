// A real OpenID Provider for tests/interop/test_oidc.py: npm `oidc-provider` (a certified
// implementation) on 127.0.0.1, port chosen by the system.
//
// Environment:
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI  the one client (Vesalius), client_secret_basic
//   ACCOUNTS_FILE  JSON {"login": {"email": ..., "email_verified": bool, "name": ...}}, read at
//                  every lookup so a test can change an account's e-mail between logins
//   PORT           default 0 (any); a restart on the same port is a provider whose signing key
//                  changed (a fresh RSA key is made at every start: key rotation)
//   ID_TOKEN_CLAIMS  "1": put e-mail and name in the ID token too (as many providers do);
//                  default: only UserInfo serves them (OpenID Connect Core 5.4, the library's
//                  default `conformIdTokenClaims`)
//
// Prints one JSON line {"issuer": ...} on stdout once it listens. Log-in goes through the
// provider's own development interactions (a login form accepting any password for the login
// name, then a consent form); the login name is the subject.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const { CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, ACCOUNTS_FILE } = process.env;
for (const [k, v] of Object.entries({ CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, ACCOUNTS_FILE })) {
  if (!v) {
    console.error(`${k} is required`);
    process.exit(2);
  }
}

function accounts() {
  return JSON.parse(readFileSync(ACCOUNTS_FILE, 'utf8'));
}

const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomUUID(),
  alg: 'RS256',
  use: 'sig',
};

const server = http.createServer();
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [signingKey] },
    conformIdTokenClaims: process.env.ID_TOKEN_CLAIMS !== '1',
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    async findAccount(ctx, id) {
      const a = accounts()[id];
      if (!a) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...a };
        },
      };
    },
    // PKCE is required of every client (S256 is the only method oidc-provider accepts).
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ['interop-test-only'] },
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
