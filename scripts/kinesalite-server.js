#!/usr/bin/env node
// Kinesalite (local Kinesis emulator) bound to 127.0.0.1 only.
//
// Usage: node scripts/kinesalite-server.js PORT
//
// The kinesalite CLI has no host flag and listens on every interface, so the
// shardline dev stack (shardline/devstack/services.py, path in common.py) starts it through this script.
// Streams are kept in memory and become ACTIVE at once (no CREATING/UPDATING delay).
'use strict'

var kinesalite = require('kinesalite')

var HOST = '127.0.0.1'
var port = parseInt(process.argv[2], 10)

if (!(port > 0 && port < 65536)) {
  console.error('usage: node scripts/kinesalite-server.js PORT')
  process.exit(2)
}

var server = kinesalite({
  createStreamMs: 0,
  deleteStreamMs: 0,
  updateStreamMs: 0,
  // the test suite shares one stack across hundreds of streams: far above AWS's default
  shardLimit: 10000,
})

server.on('error', function(err) {
  console.error('kinesalite: ' + err.message)
  process.exit(1)
})

server.listen(port, HOST, function() {
  console.log('kinesalite listening on http://' + HOST + ':' + port + ' (pid ' + process.pid + ')')
})

function stop(signal) {
  console.log('kinesalite: ' + signal + ', exiting')
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
