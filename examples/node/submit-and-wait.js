#!/usr/bin/env node
'use strict'
// Submit one command and wait for its outcome.
//
//   node submit-and-wait.js --tenant acme --account fleet-ops --vin 5YJ3E1EA7KF000001 \
//     --command set_charge_limit --params '{"percent": 80}' [--key order-1234]
//
// Prints the reply, then the terminal event; exits 0 only if the command
// succeeded.  The same --key twice: the second run is a duplicate.

const { parseArgs } = require('util')
const { randomUUID } = require('crypto')
const { Client, FleetqError } = require('../../clients/node')

async function main () {
  const { values: a } = parseArgs({
    options: {
      endpoint: { type: 'string', default: 'tcp://127.0.0.1:5555' },
      publish: { type: 'string' },
      tenant: { type: 'string' },
      account: { type: 'string' },
      vin: { type: 'string' },
      site: { type: 'string' }, // a string: site ids can be above 2^53
      command: { type: 'string' },
      params: { type: 'string', default: '{}' },
      key: { type: 'string' }
    }
  })
  const c = new Client({ endpoint: a.endpoint, publish: a.publish })
  try {
    const r = await c.submit({
      tenant: a.tenant, key: a.key || randomUUID(), account: a.account, vin: a.vin, site: a.site,
      command: a.command, params: JSON.parse(a.params), wait: true
    })
    console.log(`${r.dup ? 'duplicate of' : 'accepted'} ${r.id}`)
    console.log(r.event.state + (r.event.reason ? `: ${r.event.reason}` : ''))
    return r.event.state === 'succeeded' ? 0 : 1
  } catch (e) {
    if (!(e instanceof FleetqError)) throw e
    console.error(`refused: ${e.code}: ${e.message}`)
    return 2
  } finally {
    c.close()
  }
}

main().then((code) => { process.exitCode = code })
