'use strict'
// The Node examples (examples/node) against a real fleetqd + fleetsim:
// submit-and-wait (and its duplicate), the status consumer across a
// fleetqd restart and its own restart from a cursor file (each event
// exactly once), and the demand-response summary.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawn, spawnSync } = require('child_process')
const fq = require('..')
const { startWorld, unique, track, closeAll } = require('./world')

const EX = path.join(__dirname, '..', '..', '..', 'examples', 'node')
let W
before(async () => { W = await startWorld() })
after(async () => {
  closeAll()
  if (W) await W.stop()
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const run = (script, ...args) => spawnSync(process.execPath, [path.join(EX, script), '--endpoint', W.endpoint, '--publish', W.publish, ...args.map(String)], { encoding: 'utf8', timeout: 60000 })

test('submit-and-wait', () => {
  const t = unique('ex')
  const args = ['--tenant', t, '--account', W.account, '--vin', W.vins[5], '--command', 'set_charge_limit', '--params', '{"percent": 67}', '--key', 'ex-1']
  let r = run('submit-and-wait.js', ...args)
  assert.equal(r.status, 0, r.stderr)
  assert.match(r.stdout, /^accepted .*\nsucceeded/)
  r = run('submit-and-wait.js', ...args)
  assert.equal(r.status, 0, r.stderr)
  assert.match(r.stdout, /^duplicate of /)
  r = run('submit-and-wait.js', '--tenant', t, '--account', W.account, '--vin', W.vins[5], '--command', 'set_charge_limit', '--params', '{"percent": 6}')
  assert.equal(r.status, 2)
  assert.match(r.stderr, /bad_param/)
})

async function consumer (t, cursorFile) {
  // Output to files: a pipe nobody reads would stall it.
  const tag = `${Date.now()}${Math.random().toString(36).slice(2, 6)}`
  const out = `${cursorFile}.out${tag}`
  const errFile = `${cursorFile}.err${tag}`
  const fd = fs.openSync(out, 'w')
  const efd = fs.openSync(errFile, 'w')
  const p = spawn(process.execPath, [path.join(EX, 'status-consumer.js'), '--endpoint', W.endpoint, '--publish', W.publish, '--tenant', t, '--json', '--cursor-file', cursorFile], { stdio: ['ignore', fd, efd] })
  fs.closeSync(fd)
  fs.closeSync(efd)
  p.outFile = out
  let code = null
  p.exited = new Promise((resolve) => p.on('exit', (c) => { code = c; resolve(c) }))
  // It says when its start points are fixed (a loaded machine can take
  // seconds to get there); events published before that are not its.
  const deadline = Date.now() + 30000
  while (!fs.readFileSync(errFile, 'utf8').includes('watching ')) {
    assert.equal(code, null, `status-consumer.js exited early: ${fs.readFileSync(errFile, 'utf8')}`)
    assert.ok(Date.now() < deadline, 'status-consumer.js never said it was watching')
    await sleep(50)
  }
  return p
}

async function stop (p) {
  p.kill('SIGINT')
  await p.exited
  return fs.readFileSync(p.outFile, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
}

test('status-consumer survives a fleetqd restart and its own', async () => {
  const t = unique('ex-cons')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fq-node-ex-'))
  const cursorFile = path.join(dir, 'cursor.json')
  const c = track(new fq.Client({ endpoint: W.endpoint, timeout: 3000 }))
  const burst = async (n, start) => (await c.submitMany(Array.from({ length: n }, (_, j) => ({ tenant: t, key: `k${start + j}`, account: W.account, command: 'door_lock', vin: W.vins[(start + j) % W.vins.length] })))).map((r) => r.id)
  let p = await consumer(t, cursorFile)
  let ids = await burst(40, 0)
  await sleep(1000)
  await W.restart()
  ids = ids.concat(await burst(40, 40))
  await sleep(3000)
  let seen = await stop(p)
  ids = ids.concat(await burst(40, 80))
  p = await consumer(t, cursorFile)
  const stored = async () => {
    const out = []
    for (let sh = 0; sh < 2; sh++) {
      for (let a = 0n; ;) {
        const r = await c.history({ shard: sh, after: a, limit: 1000, tenant: t })
        out.push(...r.events)
        if (r.next <= a) break
        a = r.next
      }
    }
    return out
  }
  const done = (evs) => ids.every((id) => evs.some((e) => e.id === id && fq.TERMINAL.has(e.state)))
  let all
  for (let i = 0; i < 30; i++) {
    await sleep(2000)
    all = await stored()
    if (done(all)) break
  }
  await sleep(2000)
  seen = seen.concat(await stop(p))
  const pos = seen.map((e) => `${e.shard}/${e.tseq}`)
  assert.equal(new Set(pos).size, pos.length, 'an event printed twice')
  assert.deepEqual([...pos].sort(), all.map((e) => `${e.shard}/${e.tseq}`).sort(), 'events missing')
  assert.ok(done(seen))
  fs.rmSync(dir, { recursive: true })
})

test('demand-response', () => {
  const t = unique('ex-dr')
  const cars = W.vins.slice(0, 4)
  let r = run('demand-response.js', '--tenant', t, '--account', W.account, '--amps', 11, '--event', 'dr-test', ...cars)
  assert.equal(r.status, 0, r.stdout + r.stderr)
  assert.match(r.stdout, /4 of 4 cars set to 11 A/)
  for (const v of cars) assert.match(r.stdout, new RegExp(`${v}  succeeded`))
  r = run('demand-response.js', '--tenant', t, '--account', W.account, '--amps', 11, '--event', 'dr-test', ...cars)
  assert.equal(r.status, 0)
})
