// Creates the blob container the compose profile `azure` stores backups in, once Azurite
// answers (idempotent: an existing container is fine). Shared Key authorisation with the
// account key from AZURE_STORAGE_KEY; the stack's CA comes from NODE_EXTRA_CA_CERTS.
'use strict';
const https = require('https');
const crypto = require('crypto');

const account = process.env.AZ_ACCOUNT || 'devstoreaccount1';
const container = process.env.AZ_CONTAINER || 'ringvault';
const port = Number(process.env.AZ_PORT || 10000);
const host = process.env.AZ_HOST || 'localhost';
const key = process.env.AZURE_STORAGE_KEY;
if (!key) { console.error('AZURE_STORAGE_KEY is not set'); process.exit(2); }

function put() {
  return new Promise((resolve, reject) => {
    const date = new Date().toUTCString();
    const version = '2021-08-06';
    const path = `/${account}/${container}`;
    const toSign = ['PUT', '', '', '', '', '', '', '', '', '', '', '',
      `x-ms-date:${date}\nx-ms-version:${version}`,
      `/${account}${path}\nrestype:container`].join('\n');
    const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(toSign, 'utf8').digest('base64');
    const req = https.request({
      host, port, method: 'PUT', path: `${path}?restype=container`,
      headers: { 'x-ms-date': date, 'x-ms-version': version, 'Content-Length': 0,
        Authorization: `SharedKey ${account}:${sig}` },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });
}

(async () => {
  for (let i = 0; i < 120; i++) {
    try {
      const status = await put();
      if (status === 201 || status === 409) {
        console.log(`container ${container} ready (HTTP ${status})`);
        return;
      }
      console.error(`creating container ${container}: HTTP ${status}`);
      process.exit(1);
    } catch (e) {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  console.error('Azurite did not answer within 60s');
  process.exit(1);
})();
