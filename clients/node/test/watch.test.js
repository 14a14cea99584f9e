'use strict'
// client.watch() against a real fleetqd: each event exactly once, in order
// per shard, although the subscriber is made to lose events (receive
// high-water mark 1, a tiny kernel buffer, a publisher high-water mark of
// 20) and fleetqd is killed (-9) and restarted in the middle; by tenant
// (tseq), over all tenants (seq), for one device, resumed from a cursor.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fq = require('..')
const { startWorld, unique, track, closeAll } = require('./world')

let W
before(async () => { W = await startWorld(['--pub-hwm', '20']) })
after(async () => {
  closeAll()
  if (W) await W.stop()
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function burst (c, tenant, n, start = 0) {
  const cmds = Array.from({ length: n }, (_, j) => {
    const i = start + j
    return { tenant, key: `k${i}`, account: W.account, command: 'set_charging_amps', vin: W.vins[i % W.vins.length], params: { charging_amps: i % 40 }, ttlMs: 600000 }
  })
  return (await c.submitMany(cmds)).map((r) => r.id)
}

async function consume (watch, ids, ms = 120000) {
  const want = new Set(ids)
  const got = []
  const end = Date.now() + ms
  while (want.size && Date.now() < end) {
    const ev = await watch.next(1000)
    if (!ev) continue
    got.push(ev)
    if (fq.TERMINAL.has(ev.state)) want.delete(ev.id)
  }
  assert.equal(want.size, 0, `${want.size} commands without a terminal event`)
  for (let ev; (ev = await watch.next(1500));) got.push(ev)
  return got
}

async function storedByTenant (c, tenant) {
  const out = []
  for (let sh = 0; sh < 2; sh++) {
    for (let after = 0n; ;) {
      const r = await c.history({ shard: sh, after, limit: 1000, tenant })
      out.push(...r.events)
      if (r.next <= after) break
      after = r.next
    }
  }
  return out
}

async function storedRange (c, ranges) {
  const out = []
  for (const [sh, [a, b]] of Object.entries(ranges)) {
    for (let after = a; after < b;) {
      const r = await c.history({ shard: Number(sh), after, limit: 1000 })
      out.push(...r.events.filter((e) => e.seq <= b))
      if (r.next <= after) break
      after = r.next
    }
  }
  return out
}

function exactlyOnce (got, want, key) {
  const pos = got.map((e) => `${e.shard}/${e[key]}`)
  assert.equal(new Set(pos).size, pos.length, 'an event was yielded twice')
  assert.deepEqual([...pos].sort(), want.map((e) => `${e.shard}/${e[key]}`).sort(), 'events missing or extra')
  for (const sh of new Set(got.map((e) => e.shard))) {
    const mine = got.filter((e) => e.shard === sh).map((e) => e[key])
    assert.deepEqual(mine, [...mine].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), `shard ${sh} out of order`)
  }
  const by = new Map(want.map((e) => [`${e.shard}/${e[key]}`, e]))
  for (const e of got) assert.deepEqual(e, by.get(`${e.shard}/${e[key]}`))
}

test('watch by tenant across a kill -9 restart with forced gaps', async () => {
  const c = track(new fq.Client({ endpoint: W.endpoint, publish: W.publish, timeout: 2000 }))
  const t = unique('watch')
  const watch = c.watch({ tenant: t, receiveHighWaterMark: 1, receiveBufferSize: 4096, idleMs: 300 })
  await watch.start()
  let ids = await burst(c, t, 300)
  await sleep(1500) // nobody reads: the publisher and the SUB drop
  const first = []
  for (let i = 0; i < 20; i++) first.push(await watch.next(10000))
  assert.ok(first.every(Boolean))
  await W.restart()
  ids = ids.concat(await burst(c, t, 300, 300))
  const got = first.concat(await consume(watch, ids))
  exactlyOnce(got, await storedByTenant(c, t), 'tseq')
  assert.ok(watch.filled > 0, 'the test lost nothing: it proves nothing')
  console.log(`${got.length} events, ${watch.filled} from history, ${watch.core.skipped} live copies dropped`)
  watch.close()
  c.close()
})

test('watch over all tenants by seq', async () => {
  const c = track(new fq.Client({ endpoint: W.endpoint, publish: W.publish, timeout: 5000 }))
  const watch = c.watch({ receiveHighWaterMark: 1, receiveBufferSize: 4096, idleMs: 300 })
  await watch.start()
  const start = watch.cursor
  const ta = unique('a')
  const tb = unique('b')
  const ids = (await burst(c, ta, 150)).concat(await burst(c, tb, 150))
  await sleep(1000)
  const got = await consume(watch, ids)
  const end = watch.cursor
  const ranges = {}
  for (const sh of Object.keys(end)) ranges[sh] = [start[sh], end[sh]]
  exactlyOnce(got, await storedRange(c, ranges), 'seq')
  const tenants = new Set(got.map((e) => e.tenant))
  assert.ok(tenants.has(ta) && tenants.has(tb))
  assert.ok(watch.filled > 0)
  watch.close()
  c.close()
})

test('watch one device, then resume from the cursor', async () => {
  const c = track(new fq.Client({ endpoint: W.endpoint, publish: W.publish, timeout: 5000 }))
  const t = unique('dev')
  const watch = c.watch({ tenant: t, device: W.vins[1], idleMs: 300 })
  await watch.start()
  const ids = await burst(c, t, 40)
  const mine = ids.filter((_, i) => i % W.vins.length === 1)
  const got = await consume(watch, mine)
  assert.ok(got.length && got.every((e) => e.vin === W.vins[1] && e.tenant === t))
  exactlyOnce(got, (await storedByTenant(c, t)).filter((e) => e.vin === W.vins[1]), 'tseq')
  const cursor = watch.cursor
  watch.close()
  const more = await burst(c, t, 16, 40)
  const again = c.watch({ tenant: t, cursor, idleMs: 300 })
  const got2 = await consume(again, more)
  const since = (await storedByTenant(c, t)).filter((e) => e.tseq > (cursor[e.shard] ?? 0n))
  exactlyOnce(got2, since, 'tseq')
  assert.deepEqual(new Set(got2.map((e) => e.id)), new Set(more))
  again.close()
  // for await works too, and ends the watch when left.
  const w3 = c.watch({ tenant: t, cursor, idleMs: 300 })
  let n = 0
  for await (const ev of w3) {
    assert.equal(ev.tenant, t)
    if (++n === 3) break
  }
  assert.equal(w3._closed, true)
  c.close()
})
