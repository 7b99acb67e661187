#!/usr/bin/env node
// imgspool-client.js - a dependency-free imgspool client for Node (18+), written from
// spool-layout.md: submit a job, read its state, wait for its result.
//
//   const isc = require('./imgspool-client.js');
//   const id = isc.submit('/var/spool/imgspool', { prompt: 'a lighthouse at dusk' });
//   const { state, host } = isc.state('/var/spool/imgspool', id);   // 'new', 'running', ...
//   const result = await isc.wait('/var/spool/imgspool', id, 600);  // the result document
//
// Command line: imgspool-client.js SPOOL submit FILE|-  |  state ID  |  wait ID [SECONDS]
// Exit codes as imgspool(1): 0 done, 1 failed, 2 usage, 3 not finished, 4 no such job.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const crypto = require('crypto');

// maildir's recipe (spool-layout.md section 3): never the same twice, on any host.
function newId() {
  const ms = Date.now();
  const micros = String((ms % 1000) * 1000 + Math.floor(Math.random() * 1000)).padStart(6, '0');
  const host = os.hostname().replace(/[^A-Za-z0-9-]/g, '_').slice(0, 64) || 'host';
  // The "r": 16 hex digits alone are all decimal once in about 1 800 ids, and an id ending in
  // "." and digits only is reserved for the daemon's own names.
  return `${Math.floor(ms / 1000)}.${micros}.${process.pid}.${host}.r${crypto.randomBytes(8).toString('hex')}`;
}

// Writes the job to tmp/, fsyncs it, renames it into new/; returns the task id.
function submit(spool, job, taskId) {
  const id = taskId || newId();
  const tmp = path.join(spool, 'tmp', id + '.json');
  const fd = fs.openSync(tmp, 'wx', 0o666);
  try {
    fs.writeSync(fd, JSON.stringify(job));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, path.join(spool, 'new', id + '.json'));
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch (_) { /* already gone */ }
    throw e;
  }
  return id;
}

// { state, host }: the directory the job file is in (host: the daemon running it);
// state null when it is nowhere (not submitted yet, or between two renames).
function state(spool, id) {
  for (const dir of ['new', 'deferred', 'hold', 'failed', 'done']) {
    if (fs.existsSync(path.join(spool, dir, id + '.json'))) return { state: dir, host: null };
  }
  // ID in new/ is a client's name; in deferred/, a version moved back (spool-layout.md §5).
  for (const dir of ['new', 'deferred']) {
    if (fs.existsSync(path.join(spool, dir, id))) return { state: dir, host: null };
  }
  // deferred/ID.N.json (N 2..9): moved back while both names there were taken (§5).
  for (let n = 2; n <= 9; n++) {
    if (fs.existsSync(path.join(spool, 'deferred', `${id}.${n}.json`))) {
      return { state: 'deferred', host: null };
    }
  }
  let names = [];
  try { names = fs.readdirSync(path.join(spool, 'running')); } catch (_) { /* no running/ */ }
  for (const name of names) {
    if (name.startsWith(id + '@') && name.endsWith('.json')) {
      return { state: 'running', host: name.slice(id.length + 1, -5) };
    }
  }
  return { state: null, host: null };
}

function result(spool, id) {
  const where = state(spool, id).state;
  if (where !== 'done' && where !== 'failed') return null;
  return JSON.parse(fs.readFileSync(path.join(spool, where, id + '.result.json'), 'utf8'));
}

// Polls until the job is finished (NFS sends no events); resolves to its result.
async function wait(spool, id, timeoutSeconds, pollMs = 200) {
  const start = Date.now();
  for (;;) {
    const where = state(spool, id).state;
    if (where === 'done' || where === 'failed') return result(spool, id);
    const waited = Date.now() - start;
    if (where === null && waited > 2000) {
      throw Object.assign(new Error(`no job '${id}' in '${spool}'`), { code: 'ENOJOB' });
    }
    if (timeoutSeconds && waited > timeoutSeconds * 1000) {
      throw Object.assign(new Error(`job '${id}' not finished after ${timeoutSeconds}s (${where})`),
        { code: 'ETIMEDOUT' });
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

async function main(argv) {
  const [spool, verb, ...args] = argv;
  if (verb === 'submit' && args.length === 1) {
    const text = fs.readFileSync(args[0] === '-' ? 0 : args[0], 'utf8');
    console.log(submit(spool, JSON.parse(text)));
    return 0;
  }
  if (verb === 'state' && args.length === 1) {
    const s = state(spool, args[0]);
    if (!s.state) { console.error(`imgspool-client: no job '${args[0]}'`); return 4; }
    console.log(s.state + (s.host ? ' on ' + s.host : ''));
    return s.state === 'done' ? 0 : s.state === 'failed' ? 1 : 3;
  }
  if (verb === 'wait' && (args.length === 1 || args.length === 2)) {
    try {
      const r = await wait(spool, args[0], args[1] ? Number(args[1]) : 0);
      console.log(JSON.stringify(r, null, 2));
      return r.status === 'succeeded' ? 0 : 1;
    } catch (e) {
      console.error(`imgspool-client: ${e.message}`);
      return e.code === 'ETIMEDOUT' ? 3 : 4;
    }
  }
  console.error('usage: imgspool-client.js SPOOL submit FILE|- | state ID | wait ID [SECONDS]');
  return 2;
}

module.exports = { newId, submit, state, result, wait };

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
