#!/usr/bin/env node
'use strict'
// A status consumer that never loses or repeats an event.
//
//   node status-consumer.js --tenant acme [--cursor-file acme.cursor] [--count N]
//
// Prints one line per status event of the tenant.  fleetqd may restart and
// the subscriber may fall behind: the watch notices the gap in the
// tenant's per-shard sequence (tseq), fetches what it missed from history
// and drops live copies of what it already printed.  With --cursor-file
// the position is saved after each event, so the consumer itself can be
// stopped and started again without losing or repeating anything either.

const fs = require('fs')
const { parseArgs } = require('util')
const { Client } = require('../../clients/node')

function load (path) {
  try {
    const o = JSON.parse(fs.readFileSync(path, 'utf8'))
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, BigInt(v)]))
  } catch (e) {
    if (e.code === 'ENOENT') return undefined
    throw e
  }
}

function save (path, cursor) {
  const o = Object.fromEntries(Object.entries(cursor).map(([k, v]) => [k, v.toString()]))
  fs.writeFileSync(path + '.tmp', JSON.stringify(o))
  fs.renameSync(path + '.tmp', path) // never a half-written cursor
}

async function main () {
  const { values: a } = parseArgs({
    options: {
      endpoint: { type: 'string', default: 'tcp://127.0.0.1:5555' },
      publish: { type: 'string' },
      tenant: { type: 'string' },
      'cursor-file': { type: 'string' },
      count: { type: 'string', default: '0' },
      json: { type: 'boolean', default: false }
    }
  })
  const c = new Client({ endpoint: a.endpoint, publish: a.publish })
  const watch = c.watch({ tenant: a.tenant, cursor: a['cursor-file'] ? load(a['cursor-file']) : undefined })
  await watch.start()
  // From here on nothing is missed: the start points are fixed and
  // whatever is published after them is received or fetched.
  console.error(`watching ${a.tenant}`)
  const count = Number(a.count)
  let n = 0
  // Ctrl-C / SIGTERM end the loop between two events, never between
  // printing one and saving the cursor past it.
  let stopping = false
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { stopping = true })
  while (!stopping) {
    const ev = await watch.next(500)
    if (!ev) continue
    if (a.json) console.log(JSON.stringify(ev, (k, v) => (typeof v === 'bigint' ? v.toString() : v)))
    else console.log(`${ev.shard}/${ev.tseq} ${ev.vin ?? ev.site} ${ev.command} ${ev.prev ?? '-'} -> ${ev.state} ${ev.reason}`.trimEnd())
    if (a['cursor-file']) save(a['cursor-file'], watch.cursor)
    if (count && ++n >= count) break
  }
  watch.close()
  c.close()
}

main()
