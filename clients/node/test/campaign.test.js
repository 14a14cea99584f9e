'use strict'
// Campaigns (issue 16) through the Node client: the device list checked
// and split into parts below the 256 KiB body limit, then against a real
// fleetqd + fleetsim: a campaign in several parts runs to done, followed
// by watchCampaign (iterator and onProgress), its device commands carry
// the key <key>/<vin>, a repeat is a duplicate, abort cancels what is
// scheduled.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fq = require('..')
const C = require('../lib/common')
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

const vinOf = (i) => '5YJ3E1EA7KF' + String(i).padStart(6, '0')

test('parts fit the body limit and keep the order', () => {
  const devs = []
  for (let i = 0; i < 8000; i++) devs.push({ vin: vinOf(i), account: `acct-${i % 7}` })
  const parts = C.campaignRequests({ tenant: 'acme', key: 'grid-1', command: 'set_charge_limit', devices: devs, params: { percent: 80 }, rate: 500, maxFailureRatio: 0.25, notBefore: 1795920000000 })
  assert.equal(parts.length, 2)
  const all = []
  parts.forEach((p, i) => {
    assert.ok(C.pack({ ...p, req: 2n ** 62n }).length <= C.BODY_LIMIT)
    assert.equal(p.part, i + 1)
    assert.equal(p.parts, 2)
    assert.equal(p.rate, 500)
    assert.equal(p.not_before, 1795920000000n)
    all.push(...p.devices)
  })
  assert.deepEqual(all, devs)
  const one = C.campaignRequests({ tenant: 'a', key: 'k', command: 'flash_lights', devices: [vinOf(1), 77n], account: 'x' })
  assert.equal(one.length, 1)
  assert.equal(one[0].part, undefined)
  assert.deepEqual(one[0].devices, [{ vin: vinOf(1), account: 'x' }, { site: 77n, account: 'x' }])
  assert.throws(() => C.campaignRequests({ tenant: 'a', key: 'k', command: 'x', devices: [vinOf(1), vinOf(1).toLowerCase()], account: 'a' }),
    /devices\[1\]: 5YJ3E1EA7KF000001 is listed twice \(first at devices\[0\]\)/)
  assert.throws(() => C.campaignRequests({ tenant: 'a', key: 'k', command: 'x', devices: [{ vin: vinOf(1) }] }), /devices\[0\]: no account/)
  assert.throws(() => C.campaignRequests({ tenant: 'a', key: 'k', command: 'x', devices: [vinOf(1)], account: 'a', rate: 0 }), /rate/)
  assert.throws(() => C.campaignRequests({ tenant: 'a', key: 'k'.repeat(101), command: 'x', devices: [vinOf(1)], account: 'a' }), /1\.\.100 bytes/)
})

test('a campaign in parts runs to done; watch, get, dup', async () => {
  const t = unique('ncamp')
  const devices = W.vins.slice(0, 6).map((vin) => ({ vin, account: W.account }))
  const r = await c.campaign({ tenant: t, key: 'flash-1', command: 'flash_lights', devices, ttlMs: 60000, partBytes: 300 })
  assert.equal(r.dup, false)
  assert.equal(r.devices, 6)
  assert.ok(r.parts >= 2, `parts ${r.parts}`)
  const seen = []
  for await (const ev of c.watchCampaign({ id: r.id })) {
    assert.equal(ev.id, r.id)
    seen.push(ev)
  }
  const last = seen[seen.length - 1]
  assert.equal(last.state, 'done')
  assert.equal(last.succeeded, 6)
  assert.equal(last.failed, 0)
  const g = await c.campaignGet({ tenant: t, key: 'flash-1' })
  assert.equal(g.id, r.id)
  assert.equal(g.state, 'done')
  assert.deepEqual(g.counts, { succeeded: 6 })
  for (const vin of W.vins.slice(0, 6)) {
    const d = await c.get({ tenant: t, key: `flash-1/${vin}` })
    assert.equal(d.state, 'succeeded')
    assert.equal(d.command, 'flash_lights')
  }
  const r2 = await c.campaign({ tenant: t, key: 'flash-1', command: 'flash_lights', devices, ttlMs: 60000, partBytes: 300 })
  assert.equal(r2.dup, true)
  assert.equal(r2.id, r.id)
  const got = []
  const fin = await c.watchCampaign({ tenant: t, key: 'flash-1', onProgress: (ev) => got.push(ev) })
  assert.equal(fin.state, 'done')
  assert.equal(got[got.length - 1].final, true)
  await assert.rejects(c.campaignGet({ tenant: t, key: 'nope' }), fq.NotFound)
})

test('abort cancels the scheduled devices', async () => {
  const t = unique('ncamp')
  const at = Date.now() + 600000
  const r = await c.campaign({ tenant: t, key: 'later', command: 'door_lock', devices: W.vins.slice(0, 3), account: W.account, notBefore: at })
  assert.equal(r.state, 'scheduled')
  const a = await c.campaignAbort({ id: r.id })
  assert.equal(a.state, 'aborted')
  assert.equal(a.cancelled, 3)
  const g = await c.campaignGet({ id: r.id })
  assert.equal(g.state, 'aborted')
  assert.deepEqual(g.counts, { cancelled: 3 })
  assert.equal((await c.campaignAbort({ tenant: t, key: 'later' })).cancelled, 0)
  const evs = []
  for await (const ev of c.watchCampaign({ id: r.id })) evs.push(ev)
  assert.equal(evs[evs.length - 1].state, 'aborted')
})

test('parts are sent again while fleetqd does not answer', async () => {
  // fleetqd frozen for 1.5 s: each try of the first part times out (500
  // ms, one retry); campaign() keeps sending it within its timeout.
  const t = unique('ncamp')
  const slow = track(new fq.Client({ endpoint: W.endpoint, publish: W.publish, timeout: 500, retries: 1 }))
  process.kill(W.pid, 'SIGSTOP')
  const timer = setTimeout(() => process.kill(W.pid, 'SIGCONT'), 1500)
  let r
  try {
    r = await slow.campaign({ tenant: t, key: 'frozen', command: 'door_lock', devices: W.vins.slice(0, 5), account: W.account, notBefore: Date.now() + 600000, partBytes: 300, timeout: 20000 })
  } finally {
    clearTimeout(timer)
    process.kill(W.pid, 'SIGCONT')
  }
  assert.equal(r.devices, 5)
  assert.ok(r.parts >= 2)
  const g = await c.campaignGet({ id: r.id })
  assert.deepEqual(g.counts, { scheduled: 5 })
  assert.equal(g.parts_received, r.parts)
  await c.campaignAbort({ id: r.id })
})
