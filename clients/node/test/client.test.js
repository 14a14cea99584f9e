'use strict'
// Every call of fleetq-client against a real fleetqd + fleetsim: ping,
// health, submit (and wait), get, cancel, history, the admin calls, errors
// per code, natural JavaScript values (undefined, 1 for true, BigInt site
// ids), pipelining 1,000 submits and a retry with the same key while
// fleetqd does not answer.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const zmq = require('zeromq')
const { Encoder, Decoder } = require('@msgpack/msgpack')
const fq = require('..')
const { startWorld, unique, track, closeAll } = require('./world')

let W
let c
before(async () => {
  W = await startWorld()
  c = track(new fq.Client({ endpoint: W.endpoint, publish: W.publish, timeout: 5000 }))
})
after(async () => {
  closeAll()
  if (W) await W.stop()
})

const BIG = BigInt(process.env.FQ_BIG_SITE || '1152921504606846983') // 2^60 + 7

test('ping and health', async () => {
  const r = await c.ping()
  assert.equal(r.ok, true)
  assert.equal(r.shards, 2)
  const h = await c.health()
  assert.equal(h.ok, true)
  assert.ok(h.latencyMs >= 0)
  const dead = track(new fq.Client({ endpoint: 'tcp://127.0.0.1:9', timeout: 300 }))
  const d = await dead.health({ timeout: 300 })
  dead.close()
  assert.equal(d.ok, false)
  assert.equal(d.error, 'timeout')
})

test('submit with wait, get, history; seq and tseq are BigInt', async () => {
  const t = unique('node')
  const r = await c.submit({ tenant: t, key: 'lock-1', account: W.account, command: 'door_lock', vin: W.vins[0], wait: true, timeout: 30000 })
  assert.equal(r.ok, true)
  assert.equal(r.dup, false)
  const ev = r.event
  assert.equal(ev.id, r.id)
  assert.equal(ev.state, 'succeeded')
  assert.equal(typeof ev.seq, 'bigint')
  assert.equal(typeof ev.tseq, 'bigint')
  assert.equal(typeof ev.at, 'number')
  assert.equal(typeof ev.shard, 'number')
  const g = await c.get({ id: r.id })
  assert.equal(g.state, 'succeeded')
  assert.equal((await c.get({ tenant: t, key: 'lock-1' })).id, r.id)
  assert.equal((await c.get(r.id)).id, r.id)
  const again = await c.submit({ tenant: t, key: 'lock-1', account: W.account, command: 'door_lock', vin: W.vins[0], wait: true, timeout: 30000 })
  assert.equal(again.dup, true)
  assert.equal(again.event.seq, ev.seq)
  const h = await c.history({ shard: ev.shard, tenant: t })
  assert.deepEqual(h.events.map((e) => e.tseq), h.events.map((_, i) => BigInt(i + 1)))
  assert.equal(h.events[0].state, 'queued')
  assert.deepEqual(h.events[h.events.length - 1], ev)
  assert.equal(h.next, ev.tseq)
})

test('a failure comes back as the terminal event', async () => {
  const r = await c.submit({ tenant: unique('node'), key: 'u', account: W.account, command: 'honk_horn', vin: W.unpaired, wait: true, timeout: 30000 })
  assert.equal(r.event.state, 'failed')
  assert.equal(r.event.error, 'key_not_paired')
  assert.match(r.event.reason, /tesla\.com\/_ak\//)
})

test('cancel', async () => {
  const t = unique('node')
  const a = await c.submit({ tenant: t, key: 'c-1', account: W.account, command: 'set_charge_limit', vin: W.asleep, params: { percent: 70 } })
  const b = await c.submit({ tenant: t, key: 'c-2', account: W.account, command: 'set_sentry_mode', vin: W.asleep, params: { on: true } })
  for (let i = 0; i < 100 && (await c.get({ id: a.id })).state !== 'waking'; i++) await new Promise((resolve) => setTimeout(resolve, 100))
  const x = await c.cancel({ id: b.id })
  assert.equal(x.state, 'cancelled')
  await assert.rejects(c.cancel({ tenant: t, key: 'c-1' }), (e) => e instanceof fq.NotCancellable && e.state === 'waking' && e.code === 'not_cancellable')
  await assert.rejects(c.cancel({ id: '00ffffffffffffff' }), fq.NotFound)
})

test('errors are classes per code', async () => {
  const t = unique('node')
  await assert.rejects(c.submit({ tenant: t, key: 'p', account: W.account, command: 'set_charge_limit', vin: W.vins[1], params: { percent: 120 } }),
    (e) => e instanceof fq.BadParam && e instanceof fq.FleetqError && e.code === 'bad_param' && /params\.percent: 120 is out of range/.test(e.message))
  await assert.rejects(c.submit({ tenant: t, key: 'u', account: W.account, command: 'fly', vin: W.vins[1] }), fq.UnknownCommand)
  await assert.rejects(c.submit({ tenant: t, key: 'v', account: W.account, command: 'door_lock', vin: '5YJ3E1EA7KF00000I' }),
    (e) => e instanceof fq.BadRequest && /invalid character at byte 16/.test(e.message))
  await c.submit({ tenant: t, key: 'm', account: W.account, command: 'set_charge_limit', vin: W.vins[1], params: { percent: 60 } })
  await assert.rejects(c.submit({ tenant: t, key: 'm', account: W.account, command: 'set_charge_limit', vin: W.vins[1], params: { percent: 61 } }), fq.IdempotencyMismatch)
  await assert.rejects(c.get({ id: '00ffffffffffffff' }), fq.NotFound)
  await assert.rejects(c.submit({ tenant: t, key: 'x', account: W.account, command: 'door_lock' }), RangeError)
  await assert.rejects(c.submit({ tenant: t, key: 'x', account: W.account, command: 'door_lock', vin: W.vins[1], ttlMs: 1.5 }), TypeError)
})

test('natural JavaScript values are accepted', async () => {
  const t = unique('node')
  const r = await c.submit({ tenant: t, key: 1001, account: W.account, command: 'set_charge_limit', vin: W.vins[2].toLowerCase(), params: { percent: 80.0 }, ttlMs: 30000, coalesce: 1, wake: undefined, site: undefined })
  const g = await c.get({ id: r.id })
  assert.equal(g.key, '1001')
  assert.deepEqual(g.params, { percent: 80 })
  assert.equal(g.coalesce, true)
  assert.equal(g.ttl_ms, 30000)
  const s = await c.submit({ tenant: t, key: 'sched', account: W.account, command: 'set_scheduled_charging', vin: W.vins[2], params: { enable: 1, time: '120' } })
  assert.deepEqual((await c.get({ id: s.id })).params, { enable: true, time: 120 })
})

test('notBefore schedules a command', async () => {
  const t = unique('nb')
  const at = Date.now() + 600000
  const r = await c.submit({ tenant: t, key: 'nb-1', account: W.account, command: 'door_lock', vin: W.vins[3], notBefore: at })
  assert.equal(r.state, 'scheduled')
  const g = await c.get({ id: r.id })
  assert.equal(Number(g.not_before), at)
  assert.equal(Number(g.deadline), at + Number(g.ttl_ms))
  const r2 = await c.submit({ tenant: t, key: 'nb-1', account: W.account, command: 'door_lock', vin: W.vins[3], not_before: new Date(at) })
  assert.equal(r2.dup, true)
  assert.equal(r2.id, r.id)
  assert.equal((await c.cancel({ id: r.id })).state, 'cancelled')
})

test('the daemon forgives what @msgpack/msgpack writes by default', async () => {
  // Without ignoreUndefined, undefined fields go out as nil.
  const enc = new Encoder({ useBigInt64: true })
  const dec = new Decoder({ useBigInt64: true })
  const s = new zmq.Dealer({ linger: 0 })
  s.connect(W.endpoint)
  const call = async (body) => {
    await s.send(enc.encode(body))
    const [reply] = await s.receive()
    return dec.decode(reply)
  }
  const t = unique('raw')
  const r = await call({ op: 'submit', tenant: t, key: 'nil-1', account: W.account, vin: undefined, site: BIG, command: 'backup', params: { backup_reserve_percent: 20 }, ttl_ms: undefined, coalesce: undefined, req: 3 })
  assert.equal(r.ok, true, JSON.stringify(r, (k, v) => typeof v === 'bigint' ? String(v) : v))
  const g = await call({ op: 'get', id: undefined, tenant: t, key: 'nil-1' })
  assert.equal(g.command.site, BIG)
  const b = await call({ op: 'submit', tenant: t, key: 'k', account: W.account, vin: W.vins[0], command: 'door_lock', coalesce: 1 })
  assert.equal(b.message, '"coalesce": expected bool, got integer')
  s.close()
})

test('site ids above 2^53 are exact as BigInt, both ways', async () => {
  const t = unique('node')
  const r = await c.submit({ tenant: t, key: 'site-1', account: W.account, command: 'backup', site: BIG, params: { backup_reserve_percent: 35 }, wait: true, timeout: 30000 })
  assert.equal(r.event.state, 'succeeded')
  assert.equal(r.event.site, BIG)
  assert.equal((await c.get({ id: r.id })).site, BIG)
  const r2 = await c.submit({ tenant: t, key: 'site-2', account: W.account, command: 'backup', site: W.bigSite, params: { backup_reserve_percent: 36 } })
  assert.equal((await c.get({ id: r2.id })).site, BIG)
  await assert.rejects(c.submit({ tenant: t, key: 'site-3', account: W.account, command: 'backup', site: Number(BIG), params: { backup_reserve_percent: 35 } }), RangeError)
})

test('pipelining 1,000 submits on one connection', async () => {
  const t = unique('pipe')
  const cmds = Array.from({ length: 1000 }, (_, i) => ({ tenant: t, key: `k${i}`, account: W.account, command: 'set_charging_amps', vin: W.vins[i % W.vins.length], params: { charging_amps: i % 32 }, ttlMs: 600000 }))
  const t0 = Date.now()
  const out = await Promise.all(cmds.map((m) => c.submit(m)))
  const took = Date.now() - t0
  assert.equal(new Set(out.map((r) => r.id)).size, 1000)
  assert.ok(out.every((r) => r.ok && r.dup === false))
  const gets = await Promise.all(cmds.map((m) => c.get({ tenant: t, key: m.key })))
  assert.deepEqual(gets.map((g) => g.id), out.map((r) => r.id))
  assert.deepEqual(gets.map((g) => g.params.charging_amps), cmds.map((m) => m.params.charging_amps))
  const again = await c.submitMany(cmds, { window: 250 })
  assert.deepEqual(again.map((r) => r.id), out.map((r) => r.id))
  assert.ok(again.every((r) => r.dup))
  console.log(`1000 concurrent submits in ${took} ms`)
})

test('a retry after a timeout reuses the key: one command', async () => {
  const t = unique('retry')
  const rc = track(new fq.Client({ endpoint: W.endpoint, timeout: 400, retries: 8 }))
  process.kill(W.pid, 'SIGSTOP')
  let p
  try {
    p = rc.submit({ tenant: t, key: 'once', account: W.account, command: 'set_charge_limit', vin: W.vins[3], params: { percent: 77 } })
    await new Promise((resolve) => setTimeout(resolve, 1500))
  } finally {
    process.kill(W.pid, 'SIGCONT')
  }
  const r = await p
  assert.equal(r.ok, true)
  const g = await rc.get({ tenant: t, key: 'once' })
  assert.equal(g.id, r.id)
  const h = await rc.history({ shard: g.shard, tenant: t, limit: 1000 })
  assert.deepEqual(h.events.filter((e) => e.state === 'queued').map((e) => e.id), [r.id])
  rc.close()
})

test('no reply is a Timeout error', async () => {
  const dc = track(new fq.Client({ endpoint: 'tcp://127.0.0.1:9', timeout: 200, retries: 1 }))
  await assert.rejects(dc.ping(), (e) => e instanceof fq.Timeout && e instanceof fq.FleetqError && e.code === 'timeout')
  dc.close()
})

test('admin calls', async () => {
  assert.deepEqual((await c.accountList()).map((a) => a.id), [W.account])
  const a = await c.accountGet(W.account)
  assert.equal(a.id, W.account)
  assert.equal(a.access_token, undefined)
  assert.equal(await c.accountRetry(W.account), false)
  await assert.rejects(c.accountGet('nobody'), fq.NotFound)
})
