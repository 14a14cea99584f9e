#!/usr/bin/env node
'use strict'
// Demand response: set the charging current of a list of cars at once and
// print what happened to each.
//
//   node demand-response.js --tenant grid --account fleet-ops --amps 8 VIN [VIN ...]
//
// Each car gets set_charging_amps with coalesce (a newer set-point replaces
// one still queued) and the event id in its key, so re-running the same
// event (--event) never sends a car the same command twice.  All commands
// are in flight at once on one connection.

const { parseArgs } = require('util')
const { Client, FleetqError } = require('../../clients/node')

async function main () {
  const { values: a, positionals: vins } = parseArgs({
    allowPositionals: true,
    options: {
      endpoint: { type: 'string', default: 'tcp://127.0.0.1:5555' },
      publish: { type: 'string' },
      tenant: { type: 'string' },
      account: { type: 'string' },
      amps: { type: 'string' },
      event: { type: 'string', default: `dr-${new Date().toISOString().slice(0, 16)}` },
      'ttl-ms': { type: 'string', default: '300000' }
    }
  })
  if (!vins.length) throw new Error('no cars given')
  const t0 = Date.now()
  const c = new Client({ endpoint: a.endpoint, publish: a.publish })
  const results = await Promise.all(vins.map(async (vin) => {
    try {
      const r = await c.submit({
        tenant: a.tenant, key: `${a.event}/${vin}`, account: a.account, vin,
        command: 'set_charging_amps', params: { charging_amps: Number(a.amps) },
        coalesce: true, ttlMs: Number(a['ttl-ms']), wait: true
      })
      return [vin, r.event.state, r.event.reason]
    } catch (e) {
      if (!(e instanceof FleetqError)) throw e
      return [vin, `refused (${e.code})`, e.message]
    }
  }))
  c.close()
  const width = Math.max(...vins.map((v) => v.length))
  for (const [vin, state, reason] of results) console.log(`${vin.padEnd(width)}  ${state.padEnd(12)} ${reason}`)
  const ok = results.filter((r) => r[1] === 'succeeded').length
  console.log(`\n${ok} of ${vins.length} cars set to ${a.amps} A in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  return ok === vins.length ? 0 : 1
}

main().then((code) => { process.exitCode = code })
