#!/usr/bin/env node
// s3server.js - a real S3-compatible server for the integration tests: s3rver, with every
// request's SigV4 signature checked by the AWS SDK's own signer (@smithy/signature-v4), since
// s3rver does not recompute V4 signatures itself.
//
//   node s3server.js PORT DIRECTORY BUCKET [PUT_DELAY_MS]
//
// Prints "listening" when ready, then one JSON line per request on stdout:
//   {"method", "url", "signature": "ok"|"missing"|"bad: ...", "sha256", "status"}
// A PUT is held PUT_DELAY_MS before s3rver sees it (to kill the daemon mid-upload).
'use strict';
const http = require('http');
const crypto = require('crypto');
const S3rver = require('s3rver');
const { SignatureV4 } = require('@smithy/signature-v4');

const [port, directory, bucket, putDelay] = process.argv.slice(2);
const ACCESS = 'S3RVER', SECRET = 'S3RVER';  // s3rver's built-in account

class Sha256 {
  constructor(secret) {
    this.h = secret ? crypto.createHmac('sha256', Buffer.from(secret)) : crypto.createHash('sha256');
  }
  update(data) { this.h.update(Buffer.from(data)); }
  async digest() { return new Uint8Array(this.h.digest()); }
}

async function verify(req) {
  const auth = req.headers.authorization;
  if (!auth) return 'missing';
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return 'bad: unparsable Authorization';
  const [, access, , region, service, signedList, signature] = m;
  if (access !== ACCESS) return 'bad: unknown access key';
  const signed = signedList.split(';');
  const headers = {};
  for (const name of signed) {
    if (!(name in req.headers)) return `bad: signed header ${name} missing`;
    headers[name] = req.headers[name];
  }
  const amzDate = req.headers['x-amz-date'];
  const d = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(amzDate || '');
  if (!d) return 'bad: no x-amz-date';
  const when = new Date(Date.UTC(+d[1], d[2] - 1, +d[3], +d[4], +d[5], +d[6]));
  const url = new URL(req.url, 'http://x');
  const query = {};
  for (const [k, v] of url.searchParams) query[k] = v;
  const signer = new SignatureV4({ credentials: { accessKeyId: ACCESS, secretAccessKey: SECRET },
    region, service, sha256: Sha256, uriEscapePath: false, applyChecksum: false });
  const out = await signer.sign({ method: req.method, protocol: 'http:', hostname: req.headers.host,
    path: url.pathname, query, headers }, { signingDate: when, signableHeaders: new Set(signed) });
  const want = /Signature=([0-9a-f]{64})/.exec(out.headers.authorization)[1];
  return want === signature ? 'ok' : 'bad: signature mismatch';
}

const s3 = new S3rver({ port: +port, address: '127.0.0.1', directory, silent: true,
  configureBuckets: [{ name: bucket }] });
const handle = s3.callback();

async function main() {
  await s3.configureBuckets();
  const server = http.createServer((req, res) => {
    req.pause();
    verify(req).catch(e => `bad: ${e.message}`).then(signature => {
      const line = { method: req.method, url: req.url, signature,
        sha256: req.headers['x-amz-content-sha256'] || null };
      res.on('finish', () => {
        line.status = res.statusCode;
        process.stdout.write(JSON.stringify(line) + '\n');
      });
      if (signature.startsWith('bad')) {
        res.statusCode = 403;
        res.end('<Error><Code>SignatureDoesNotMatch</Code></Error>');
        return;
      }
      const go = () => handle(req, res);
      if (req.method === 'PUT' && +putDelay > 0) {
        process.stdout.write(JSON.stringify({ holding: req.url }) + '\n');
        setTimeout(go, +putDelay);
      } else go();
    });
  });
  server.listen(+port, '127.0.0.1', () => process.stdout.write('listening\n'));
  process.on('SIGTERM', () => process.exit(0));
}
main();
