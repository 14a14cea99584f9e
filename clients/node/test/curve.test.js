'use strict'
// fleetq-client over CURVE against a fleetqd with a clients file: a
// tenant's service submits, waits and watches; another tenant is
// forbidden; the admin key manages accounts; a plaintext client and a key
// file that others may read are refused.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const os = require('os')
const path = require('path')
const fq = require('..')
const { startWorld, track, closeAll } = require('./world')

let W
before(async () => { W = await startWorld(['--curve']) })
after(async () => {
  closeAll()
  if (W) await W.stop()
})

const client = (name, extra = {}) => track(new fq.Client({ endpoint: W.endpoint, publish: W.publish, curveKey: W.curve.keyFiles[name], serverKey: W.curve.serverKey, timeout: 5000, ...extra }))

test('a tenant service submits, waits and watches over CURVE', async () => {
  const c = client('acme')
  assert.equal((await c.ping()).ok, true)
  const watch = c.watch({ tenant: 'acme', idleMs: 300 })
  await watch.start()
  const r = await c.submit({ tenant: 'acme', key: 'curve-1', account: W.account, command: 'door_unlock', vin: W.vins[0], wait: true, timeout: 30000 })
  assert.equal(r.event.state, 'succeeded')
  const got = []
  for (let ev; (ev = await watch.next(2000));) got.push(ev)
  assert.equal(got[0].state, 'queued')
  assert.deepEqual(got[got.length - 1], r.event)
  assert.ok(got.every((e) => e.id === r.id))
  watch.close()
  await assert.rejects(c.submit({ tenant: 'globex', key: 'g-1', account: W.account, command: 'door_lock', vin: W.vins[0] }),
    (e) => e instanceof fq.Forbidden && /globex/.test(e.message))
  await assert.rejects(c.accountList(), fq.Forbidden)
  c.close()
})

test('the admin key manages accounts; other keys keep to their tenant', async () => {
  const ops = client('ops')
  assert.deepEqual((await ops.accountList()).map((a) => a.id), [W.account])
  ops.close()
  const g = client('globex', { curveKey: { publicKey: fs.readFileSync(W.curve.keyFiles.globex, 'ascii').match(/public (\S+)/)[1], secretKey: fs.readFileSync(W.curve.keyFiles.globex, 'ascii').match(/secret (\S+)/)[1] } })
  const r = await g.submit({ tenant: 'globex', key: 'g-2', account: W.account, command: 'door_lock', vin: W.vins[1], wait: true, timeout: 30000 })
  assert.equal(r.event.tenant, 'globex')
  assert.equal(r.event.state, 'succeeded')
  g.close()
})

test('refusals: plaintext, a loose key file, half a key', async () => {
  const plain = track(new fq.Client({ endpoint: W.endpoint, timeout: 500, retries: 0 }))
  const h = await plain.health({ timeout: 500 })
  assert.equal(h.ok, false)
  assert.equal(h.error, 'timeout')
  plain.close()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fq-node-'))
  const loose = path.join(dir, 'loose.key')
  fs.writeFileSync(loose, fs.readFileSync(W.curve.keyFiles.acme))
  fs.chmodSync(loose, 0o644)
  assert.throws(() => new fq.Client({ endpoint: W.endpoint, curveKey: loose, serverKey: W.curve.serverKey }), /readable or writable by group or others/)
  assert.throws(() => new fq.Client({ endpoint: W.endpoint, curveKey: W.curve.keyFiles.acme }), RangeError)
  fs.rmSync(dir, { recursive: true })
})

test('a key fleetqd refused: every call ends in Timeout, nothing is sent late', async () => {
  // libzmq drops the connection fleetqd refused (the key is in no clients
  // file yet), and a DEALER without a connection waits in send: without a
  // send timeout that send, and every request queued behind it, would go
  // out whenever a connection comes, long after the caller got its
  // Timeout.
  const c = track(new fq.Client({ endpoint: W.endpoint, curveKey: W.curve.keyFiles.stranger, serverKey: W.curve.serverKey, timeout: 500, retries: 0 }))
  const t0 = Date.now()
  const keys = []
  for (let i = 0; i < 4; i++) {
    keys.push(`stranger-${process.pid}-${i}`)
    const r = await Promise.race([
      c.submit({ tenant: 'acme', key: keys[i], account: W.account, command: 'door_lock', vin: W.vins[0] }).then(() => 'ok', (e) => e),
      new Promise((resolve) => setTimeout(() => resolve('hung'), 5000))
    ])
    assert.ok(r instanceof fq.Timeout, `call ${i}: ${r}`)
  }
  const many = await Promise.race([
    c.callMany([1, 2, 3].map(() => ({ op: 'ping' }))),
    new Promise((resolve) => setTimeout(() => resolve('hung'), 5000))
  ])
  assert.ok(Array.isArray(many) && many.every((e) => e instanceof fq.Timeout), `callMany: ${many}`)
  assert.ok(Date.now() - t0 < 15000)
  // A Timeout for a request never sent says so, and what is likely wrong.
  await new Promise((resolve) => setTimeout(resolve, 700)) // past a pending send's timeout
  const e = await c.ping({ timeout: 2000 }).catch((x) => x)
  assert.ok(e instanceof fq.Timeout, `${e}`)
  assert.match(e.message, /cannot send to .* no connection .*clients file/)
  // Now the key is listed: the same client connects, and none of the
  // submits it gave up on reaches fleetqd afterwards.
  assert.equal((await W.allow()).ok, true)
  let pong = null
  for (let i = 0; i < 40 && !pong; i++) pong = await c.ping({ timeout: 500 }).catch(() => null)
  assert.ok(pong && pong.ok, 'the client connects once its key is listed')
  await new Promise((resolve) => setTimeout(resolve, 500))
  for (const k of keys) {
    await assert.rejects(c.get({ tenant: 'acme', key: k }), (x) => x instanceof fq.NotFound, `${k} was sent late`)
  }
  c.close()
})
