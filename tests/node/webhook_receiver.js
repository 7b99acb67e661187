#!/usr/bin/env node
// webhook_receiver.js - a webhook endpoint for the integration tests. Every delivery is verified
// with the standardwebhooks library (not with imgspool's code).
//
//   node webhook_receiver.js PORT SECRET
//
// Prints "listening", then one JSON line per request:
//   {"path", "id", "timestamp", "verified": true|false, "error", "event", "status"}
// The path chooses the answer: /gone answers 410, /redirect 302 (to /ok), /switch 410 while the
// switch is on (a GET of /_switch/on or /_switch/off, the test's own, not a delivery), anything
// else 204.
'use strict';
const http = require('http');
const { Webhook } = require('standardwebhooks');

const [port, secret] = process.argv.slice(2);
const wh = new Webhook(secret);
let switchGone = false;

http.createServer((req, res) => {
  const chunks = [];
  req.on('data', c => chunks.push(c));
  req.on('end', () => {
    if (req.url.startsWith('/_switch/')) {
      switchGone = req.url === '/_switch/on';
      res.end(switchGone ? 'on' : 'off');
      return;
    }
    const body = Buffer.concat(chunks).toString('utf8');
    const line = { path: req.url, method: req.method, id: req.headers['webhook-id'] || null,
      timestamp: req.headers['webhook-timestamp'] || null, verified: false, error: null,
      event: null };
    try {
      line.event = wh.verify(body, req.headers);
      line.verified = true;
    } catch (e) {
      line.error = String(e.message || e);
    }
    let status = 204;
    if (req.url.startsWith('/gone') || (req.url.startsWith('/switch') && switchGone)) status = 410;
    else if (req.url.startsWith('/redirect')) {
      status = 302;
      res.setHeader('Location', '/ok');
    }
    line.status = status;
    process.stdout.write(JSON.stringify(line) + '\n');
    res.statusCode = status;
    res.end();
  });
}).listen(+port, '127.0.0.1', () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => process.exit(0));
