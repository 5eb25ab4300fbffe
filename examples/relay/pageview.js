// Page views to `shardline relay` from Node, with the net module only (no dependency).
//
// One connection kept open and pipelined: each send() writes one JSON line and resolves
// with the relay's answer line ("OK <event_id>" once the event is on the relay's disk,
// or "ERR <reason> <text>" at once) in order. Nothing waits on Kinesis: when the relay
// is down the connect fails at once; when it does not answer within timeoutMs the
// pending sends resolve null. A send that resolves null or ERR is DROPPED AND COUNTED
// (relay.dropped): the same choice as the PHP client (examples/relay/pageview.php).
//
//   const { Relay, pageView } = require('./pageview.js');
//   const relay = new Relay({ path: '/run/shardline/relay.sock' });
//   relay.send(pageView({ url, userAgent, ip, sessionId }));
'use strict';
const net = require('net');
const crypto = require('crypto');

class Relay {
  constructor({ path = process.env.SHARDLINE_RELAY_SOCKET || '/run/shardline/relay.sock',
                port = 0, timeoutMs = 50 } = {}) {
    this.address = port ? { host: '127.0.0.1', port } : { path };
    this.timeoutMs = timeoutMs;
    this.sock = null;
    this.pending = [];       // resolvers, in the order of the lines written
    this.buf = '';
    this.dropped = 0;
    this.sent = 0;
  }

  _connect() {
    const sock = net.createConnection(this.address);
    sock.setEncoding('utf8');
    sock.on('data', (chunk) => {
      this.buf += chunk;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const done = this.pending.shift();
        if (done) done(line);
      }
    });
    const fail = () => {
      if (this.sock === sock) this.sock = null;
      this.buf = '';
      for (const done of this.pending.splice(0)) done(null);
    };
    sock.on('error', fail);
    sock.on('close', fail);
    sock.setTimeout(this.timeoutMs, () => {
      if (this.pending.length) sock.destroy();   // no answer in time: give up, not wait
    });
    this.sock = sock;
    return sock;
  }

  /** Resolves with the answer line, or null when the relay could not be reached in time. */
  send(event) {
    return new Promise((resolve) => {
      const sock = this.sock || this._connect();
      this.pending.push((answer) => {
        if (answer !== null && answer.startsWith('OK ')) this.sent += 1;
        else this.dropped += 1;
        resolve(answer);
      });
      sock.write(JSON.stringify(event) + '\n');
    });
  }

  close() {
    if (this.sock) this.sock.end();
    this.sock = null;
  }
}

function pageView({ url, referrer = null, userAgent = '', ip, sessionId, userId = null }) {
  return {
    event_id: crypto.randomUUID(),   // the loader's dedup key: a re-send is one row
    occurred_at: new Date().toISOString(),
    url, referrer, user_agent: userAgent, ip, user_id: userId, session_id: sessionId,
  };
}

module.exports = { Relay, pageView };

// `node pageview.js N`: send N sample page views, print one answer line each.
if (require.main === module) {
  const n = Number(process.argv[2] || 1);
  const relay = new Relay();
  (async () => {
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => relay.send(pageView({
      url: `https://shop.example/p/${i}`, userAgent: 'node-example', ip: '192.0.2.1',
      sessionId: `s-node-${i % 10}`.padEnd(12, '0') }))));
    for (const a of answers) console.log(a === null ? 'DROPPED' : a);
    relay.close();
  })();
}
